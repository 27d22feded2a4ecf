# %% [markdown]
# # Phase 5: benchmark, with statistics
#
# The blueprint's benchmark plan is one command, `llama-bench -m model.gguf -p 512,1024 -n 128 -t $(nproc)`,
# and "higher is better". On a small shared machine that is not enough to tell a real gain from
# noise: here, clean runs of the same test differ by 10-20% between invocations, and one other
# busy process cuts 2-thread results several-fold. So this phase:
#
# - runs `llama-bench -o json` with `-t` always explicit and keeps **every sample** (llama-bench
#   does one warm-up run per test before its `-r` repetitions);
# - compares configurations in **interleaved rounds** (A B, then B A, ...), never one block after
#   another, and reports the ratio of means with a 95% confidence interval (Fieller) and Welch's
#   and Mann-Whitney's tests;
# - records the machine's load around every invocation (`/proc/stat`, `/proc/loadavg`) and marks
#   runs where other processes used more than 0.2 cores as **contended**;
# - finds the thread count by a sweep instead of assuming it, and measures flash attention;
# - measures jitter two ways (spread across repetitions; inter-token latency streamed from a real
#   `llama-server`) and places token generation against this machine's memory bandwidth.
#
# Flags are checked against the built binary's `--help`: current llama-bench has no `-mmp`
# (replaced by `-lm/--load-mode`) and spells flash attention `-fa on|off|auto`.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True

# %%
import aios_lib
from aios_lib.benchmark import experiments, inputs, report, roofline
from aios_lib.measure import server
from aios_lib.runtime import cpus
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="05")
run

# %% [markdown]
# ## What is measured
#
# Phase 4's native build, its generic x86-64 build, the SmolLM2 model and the SYNTHETIC model's
# quantisations, taken from this run's record (or from phase 4's cache when 05 runs alone).

# %%
inp = inputs.inputs(run)
run.record("inputs", {k: v for k, v in inp.__dict__.items() if k not in ("help", "help_text")})
inp

# %%
sz = inputs.sizes(run, inp)
sz

# %% [markdown]
# ## 1. Thread sweep
#
# The blueprint says "threads = physical cores" and, in the same breath, `-t $(nproc)` (logical
# CPUs). Which is right depends on the machine, so every thread count from 1 to the number of
# logical CPUs is measured, interleaved, and the best by **token generation** (what a chat user
# waits on) is chosen. The curve shows the mean with its 95% confidence interval.

# %%
sweep = experiments.thread_sweep(run, inp, sz)
run.record("thread_sweep", sweep.to_dict())
sweep

# %%
report.sweep_plot(sweep)

# %% [markdown]
# ## 2. Flash attention, at the chosen thread count
#
# llama-bench's default is `-fa auto` (on for the CPU backend). Off and on are measured
# interleaved; the runbook's configuration takes `-fa` only when the difference is significant.
# The thread count is `cpus.cpu_plan`'s: the sweep's best, else (nothing measured, as in plan
# mode) llama-bench's own default, else the usable CPUs.

# %%
threads = cpus.cpu_plan(run, "bench", measured=sweep.extra.get("best"), help_info=inp.help)
fa = experiments.flash_attn_ab(run, inp, threads.threads, sz)
run.record("flash_attn", fa.to_dict())
fa

# %%
chosen = experiments.choose(sweep, fa, threads)
run.record("chosen", chosen)
chosen

# %% [markdown]
# ## 3. The three configurations
#
# In one interleaved run on this machine: **blueprint** (its command, `-t $(nproc)` spelled out as
# the number), **defaults** (llama.cpp with no tuning flags; `-t` is still explicit and equals the
# default thread count llama-bench's `--help` reports) and **runbook** (the thread count and flags
# chosen above). Where two of them are the same command on this machine, measuring both shows
# the noise floor: their ratio should include 1.

# %%
three = experiments.three_way(run, inp, chosen, sz)
run.record("three_way", three.to_dict())
three

# %%
report.bars_plot(three)

# %%
report.timeline_plot(three)

# %% [markdown]
# ## 4. Native against generic x86-64
#
# The blueprint's compiler question (is `-march=native` worth it?) answered with the same model,
# threads and tests, interleaved: phase 4's native build against its generic x86-64 (SSE2) build.

# %%
ng = experiments.native_vs_generic(run, inp, chosen["threads"], sz)
run.record("native_vs_generic", ng.to_dict() if ng else None)
ng if ng else "no generic build (runtime.llama.compare_generic is false)"

# %%
report.bars_plot(ng)

# %% [markdown]
# ## 5. Q4_K_M against Q5_K_M
#
# The blueprint says Q5_K_M is "~15% slower". SmolLM2-135M cannot test that: its rows are 576
# wide, not a multiple of 256, so llama-quantize gives most of its tensors q5_0/q5_1 instead of
# K-quants (phase 4 shows the fallbacks). The comparison runs on the **SYNTHETIC** model
# (random weights, K-quant-friendly widths: its speed is real, its text is noise) with smaller
# tests (its prompt processing is ~10x slower than SmolLM2's).

# %%
qs = experiments.quant_ab(run, inp, chosen["threads"], sz, synthetic=True)
run.record("quant_synthetic", qs.to_dict() if qs else None)
qs if qs else "no SYNTHETIC Q4_K_M/Q5_K_M models (runtime.synthetic.enabled is false or phase 4 made none)"

# %%
report.bars_plot(qs)

# %% [markdown]
# ## 6. Jitter
#
# The blueprint's "system jitter" is the spread of generation time. Two views:
#
# 1. **Across repetitions**: the coefficient of variation of the samples, pooled over rounds and
#    within one invocation (the second is smaller: between-invocation noise is the larger part).
# 2. **Inter-token latency**: a real `llama-server` on 127.0.0.1 (free port, `--metrics`) with
#    the chosen threads streams `/completion` (`"stream": true`); every token's arrival is timed.
#    p50/p95/p99 of the gaps say how even generation feels to a user; the server stops with SIGTERM.

# %%
report.rep_jitter_table([sweep, three, ng, qs])

# %%
lat = server.latency(run, inp.server, inp.model["path"], threads=chosen["threads"],
                     n_predict=8 if run.params.runtime.bench.quick else run.params.runtime.bench.server_tokens)
run.record("latency", lat)
report.latency_table(lat)

# %%
report.latency_plot(lat)

# %% [markdown]
# ## 7. Roofline: how close is token generation to memory bandwidth?
#
# Each generated token reads (about) every weight once, so tg t/s cannot exceed
# bandwidth / model size. The bandwidth comes from a small C kernel (read, copy, triad over
# arrays far larger than the caches) built with the same `-O3 -march=native` as llama.cpp.
# Efficiency = tg t/s × model bytes / bandwidth. **A 135M model is overhead-bound**: thread
# synchronisation and many small matrix products per token cost more than streaming ~100 MB,
# so it reaches only about a third of the bandwidth. The SYNTHETIC ~1B model (700-800 MB per
# token) sits closer to the roofline; the figure and the findings below give the measured
# fractions. Faster memory would help the second, hardly the first.

# %%
bw = roofline.measure_bandwidth(run, sz.threads, mib=64 if run.params.runtime.bench.quick else 256)
run.record("bandwidth", bw)
bw.get("best") or "bandwidth: planned, not run"

# %%
points = roofline.points_from([three, qs], (bw.get("best") or {}).get("read_gbs"))
run.record("roofline", [p.to_dict() for p in points])
report.roofline_plot(points, (bw.get("best") or {}).get("read_gbs"))

# %% [markdown]
# ## Findings

# %%
report.findings(chosen, three, ng, qs, points, lat, inp.nproc)

# %% [markdown]
# ## What this phase ran (or, in plan mode, would run)

# %%
run.plan_summary()
