# %% [markdown]
# # Phase 7: compare runs
#
# The blueprint compares a "stock" machine with the "AI-OS" one by looking at two numbers. Two
# numbers from a noisy machine do not show a gain; a ratio with a confidence interval does. This
# notebook reads **records only** (`results.json` of run folders under `outputs/`), never the live
# system, so any two runs can be compared later, anywhere.
#
# - By default it shows **this run**'s comparison: phase 5's stock vs Synapse, decomposed, measured
#   in the same interleaved rounds, so its ratios are paired per round.
# - With `compare_with` set to another run folder (e.g. a run with `--label stock` on the stock
#   system against one with `--label aios` on Synapse OS), it compares the same configurations
#   between the two runs. Nothing pairs two runs in time: each invocation's mean is one sample, and
#   the ratio of means gets a Fieller 95% interval, with Welch's and Mann-Whitney's tests.
#
# Background differences between two runs are part of what such a comparison measures; each run's
# contended invocations are shown next to its ratio.

# %% tags=["parameters"]
# A template: `make lab` (`aios lab`) opens a copy whose outputs become a run's record.
# Opened here, the record is scratch (outputs/_scratch/) and what you save changes the template.
params_file = "parameters/default.yaml"
run_dir = None
# plan = True or False: this phase only reads records under outputs/ and changes nothing.
plan = True
# another run folder (outputs/<machine>/<run-id>) to compare this run with; None: within this run
compare_with = None

# %%
import aios_lib
from aios_lib.benchmark import compare, proof, report
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="07")
this = compare.load_run(run.dir) if (run.dir / "results.json").exists() else None
other = compare.load_run(compare_with) if compare_with else None
this if this else f"no results.json in {run.dir} yet: run phase 05 first (`aios run 05`)"

# %% [markdown]
# ## This run: Synapse against stock
#
# The findings phase 5 recorded, then each configuration's token generation and prompt processing
# with its ratio to the baseline, paired over the rounds they shared.

# %%
proof.Proof(this.proof) if this and this.proof else "no stock-vs-Synapse measurement in this run"

# %%
decomp = this.experiment("decomposition") if this else None
print("\n".join(compare.summary_lines(decomp)))

# %%
report.bars_plot(decomp, normalize=True)

# %% [markdown]
# ## Against another run (`compare_with`)
#
# Same configuration, this run over the other run, per test.

# %%
(compare.between(other, this, "decomposition") if other and this
 else "compare_with is not set: only this run's own comparison is shown above")

# %%
(report.bars_plot(compare.merged(other.experiment("decomposition"), decomp, other.label, this.label))
 if other and this and other.experiment("decomposition") and decomp and not decomp.planned
 and not other.experiment("decomposition").planned else "no second run to plot against")
