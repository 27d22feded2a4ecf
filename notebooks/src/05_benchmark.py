# %% [markdown]
# # Phase 5: Synapse against stock, with statistics that hold
#
# Synapse exists to make llama.cpp faster than the system a user would otherwise have. This phase
# measures exactly that, on this machine, and says how sure it is.
#
# **Stock** is what a user has without Synapse: llama.cpp built the way its releases ship it for
# CPUs (every CPU variant built, the best one for this CPU chosen at start-up; Phase 4 verified it,
# and where it dies here the runtime workaround it needs is used and labelled), run with
# llama-bench's and llama-server's own defaults, on the host as found. **Synapse** is Phase 4's
# verified native build, run with the knobs this machine rewards, started the way the Phase 6 unit
# starts the service, on the host with Synapse's settings applied live and restored afterwards.
#
# How it measures, and why:
#
# - **One process invocation is one sample.** Repetitions inside one llama-bench process agree more
#   closely than separate processes do, so pooling them would make confidence intervals falsely
#   narrow. Each invocation gives one number: its mean.
# - **Pairs in time.** Configurations run in rounds, each once per round, in an order drawn afresh
#   every round. A ratio is estimated from the per-round log-ratios (A and B ran minutes apart at
#   most, so the machine's slow drift cancels within each pair), with a Student t interval over
#   rounds. Drift itself is measured and shown.
# - **Stop for a reason.** The headline comparison adds rounds until its 95% CI half-width reaches
#   `runtime.bench.target_half_width` or the measurement budget (`runtime.bench.budget_s`) would be
#   exceeded; the record says which ended it and at what width.
# - **"No difference" needs bounds.** A knob is called useless here only when its whole CI lies inside
#   the equivalence band (`runtime.bench.equivalence_band`); a CI that merely contains 1 is "not
#   shown", not "equal".
# - **Memory-bound means larger than the caches.** SmolLM2 fits in the last-level cache these machines
#   report, so the speed questions use Phase 4's SYNTHETIC 3B-class model, several times the cache,
#   and the bandwidth kernel's arrays are at least four times the cache.
# - **Bench is not serve.** The headline is also measured through a real `llama-server` on loopback.
#
# Every number in the prose of this record is generated from the measurements below.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True

# %%
import aios_lib
from aios_lib.benchmark import inputs, proof, report, served
from aios_lib.measure.experiment import Experiment
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="05")
run

# %% [markdown]
# ## What is measured
#
# Phase 4's verified native build, its stock build (and whether that runs here), the real model and
# the SYNTHETIC model's quantisations, from this run's record (or from Phase 4's cache, verified
# here, when 05 runs alone), and the last-level cache the model is set against.

# %%
inp = inputs.inputs(run)
run.record("inputs", {k: v for k, v in inp.__dict__.items() if k not in ("help", "help_text")})
inp

# %% [markdown]
# ## The measurement
#
# One call runs every experiment of this phase in order, within the budget: the thread sweep, the
# knob screen, the decomposed headline, the served comparison and the quantisations, then the
# memory bandwidth. Live host settings are put back when it ends, whatever ends it (a failure,
# Ctrl-C, SIGTERM; after a SIGKILL the next run restores them from the ledger in `/run/synapse`).
# Its result is the verdict; the sections after it show where each sentence comes from.

# %%
result = proof.run_all(run, inp)
run.record("proof", result.to_dict())
run.record("chosen", result.record["chosen"])
run.record("findings", result.findings())
result

# %% [markdown]
# ## 1. Threads
#
# The blueprint says "threads = physical cores" and, in the same breath, `-t $(nproc)`. Neither is
# assumed: every thread count up to the logical CPUs is measured on token generation, and a count
# other than llama.cpp's default becomes a knob only if it beats the default with a CI above 1.

# %%
sweep = result.experiment("sweep")
report.sweep_plot(sweep)

# %% [markdown]
# ## 2. The knobs, and which of them this machine can use
#
# Each candidate is a setting the Phase 6 unit can carry: a llama.cpp flag (checked against the
# built binary's `--help`), how the process is started (scheduling policy and nice value, as the
# unit sets them), or a live host setting. Settings this host cannot change are listed with the
# reason, not silently dropped.

# %%
proof.knobs_table(result.record)

# %% [markdown]
# ### Each knob alone, and each left out of the full set
#
# Alone: the knob added to the native build as found. Left out: the full set without it, which
# shows knobs that only help together. The chosen configuration keeps the knobs whose ratio alone
# has its CI above 1; a knob whose CI lies inside the band made no difference here.

# %%
proof.screen_table(result.record)

# %%
report.ratio_plot(proof.screen_rows(result.record), "Knob screen: token generation, ratio to the reference",
                  band=result.record["band"])

# %% [markdown]
# ## 3. Synapse against stock, decomposed
#
# Four configurations in the same interleaved rounds: stock; the native build with stock's flags
# and host (what the build buys); plus the chosen llama.cpp flags (what the runtime buys); plus the
# process and host settings (what the system buys), which is Synapse. Where the CPU has more than
# AVX2, the stock build restricted to its x86-64-v3 module joins the rounds: the blueprint's own
# target ISA, so the record shows what AVX-512 (and AMX) buy here. The rounds stopped for the reason
# the record gives.

# %%
decomp = result.experiment("decomposition")
proof.decomposition_table(decomp, result.record["band"]) if decomp else "not measured"

# %%
report.ratio_plot(proof.decomposition_rows(result.record), "Where the gain comes from", band=result.record["band"])

# %% [markdown]
# ### Drift and the samples in order
#
# How much each configuration moved over the rounds (what pairing in time cancels), and every
# sample in the order it was taken.

# %%
from aios_lib.measure.sequential import drift_table
drift_table(decomp, next((t for t in decomp.tests() if t.startswith("tg")), "")) if decomp and not decomp.planned \
    else "planned"

# %%
report.timeline_plot(decomp)

# %% [markdown]
# ## 4. Served: stock llama-server against Synapse's
#
# llama-server adds sampling, slots, the HTTP path and defaults of its own, so the service is
# measured as the service: sessions of both servers alternate in rounds, each session a few
# streamed completions; generation and prompt speed are the server's own timings, the latencies
# are measured by the client. For the latencies a ratio below 1 is better.

# %%
served.table(result.record["served"])

# %%
report.ratio_plot([{**r, "label": served.METRICS[m]} for m, r in (result.record["served"].get("ratios") or {}).items()],
                  "Served: Synapse over stock per metric", band=result.record["band"])

# %% [markdown]
# ## 5. Quantisations of the SYNTHETIC model
#
# The blueprint says Q5_K_M is "about 15% slower" than Q4_K_M. Here every quantisation runs with
# Synapse's configuration on the memory-bound SYNTHETIC model, with long generation (not a handful
# of tokens) and prompt processing, file size beside speed, each as a ratio to the headline type.
# Q4_0 is the type llama.cpp repacks online on AVX2 CPUs.

# %%
proof.quant_table(result.record)

# %% [markdown]
# ## 6. Memory bandwidth and the roofline
#
# A small C kernel reads arrays at least four times the last-level cache. Token generation streams
# every weight once per token, so tg x model bytes against that bandwidth says whether this model is
# memory-bound here or limited by per-token work.

# %%
result.record.get("roofline") or "not measured"

# %% [markdown]
# ## Live host settings: applied and restored
#
# Every change of a host setting for a configuration, and its restoration, in the order they
# happened; the last rows restore what was found.

# %%
proof.live_table(result.record)

# %% [markdown]
# ## What this phase ran (or, in plan mode, would run)

# %%
run.plan_summary()
