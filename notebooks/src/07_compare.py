# %% [markdown]
# # Phase 7: compare runs
#
# The blueprint compares a "stock" machine with the "AI-OS" one by looking at two numbers. Two
# numbers from a noisy machine do not show a gain; a ratio with a confidence interval and a
# significance test does. This notebook reads **records only** (`results.json` of run folders
# under `outputs/`), never the live system, so any two runs can be compared later, anywhere.
#
# - By default it compares **within this run**: the three configurations phase 5 measured
#   interleaved (the blueprint's command, llama.cpp's defaults, the runbook's choice).
# - With `compare_with` set to another run folder (e.g. the "stock" run), it compares the same
#   experiments between the two runs: ratio of means (this run / that run) with a 95% CI,
#   Welch and Mann-Whitney p-values, and jitter side by side.
#
# Between two runs the samples were not interleaved (they ran at different times, perhaps on
# different systems), so background differences between the runs are part of what is compared:
# the record of each run's load (contended runs) is shown next to the ratio.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True
# another run folder (outputs/<machine>/<run-id>) to compare this run with; None: within this run
compare_with = None

# %%
import aios_lib
from aios_lib.benchmark import compare, report
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="07")
this = compare.load_run(run.dir) if (run.dir / "results.json").exists() else None
other = compare.load_run(compare_with) if compare_with else None
this if this else f"no results.json in {run.dir} yet: run phase 05 first (`aios run 05`)"

# %% [markdown]
# ## Within this run: blueprint vs defaults vs runbook
#
# Ratios are each configuration's mean over the blueprint's, with a Fieller 95% interval;
# "significant" needs both Welch's p < 0.05 and an interval that excludes 1.

# %%
three = this.experiment("three_way") if this else None
three if three is not None else "no three-way measurement in this run"

# %%
three.comparisons() if three is not None and not three.planned else "nothing measured yet (plan mode)"

# %%
report.bars_plot(three, normalize=True)

# %%
report.timeline_plot(three)

# %% [markdown]
# ### The other comparisons of this run
#
# Native vs generic build, Q4_K_M vs Q5_K_M on the SYNTHETIC model, flash attention, and the
# thread sweep, each with its bootstrap interval as a cross-check of Fieller's.

# %%
import pandas as pd
rows = []
for name, ex in (this.experiments() if this else {}).items():
    if ex.planned or name == "three_way" or len(ex.labels) < 2:
        continue
    for method in ("fieller", "bootstrap"):
        df = ex.comparisons(method=method)
        df.insert(0, "experiment", name)
        df.insert(1, "CI method", method)
        rows.append(df)
pd.concat(rows) if rows else "no other comparisons measured in this run"

# %%
report.sweep_plot(this.experiment("thread_sweep") if this else None)

# %% [markdown]
# ## Jitter
#
# Spread across repetitions (coefficient of variation) and the inter-token latency streamed from
# llama-server (p50/p95/p99).

# %%
report.rep_jitter_table(list(this.experiments().values()) if this else [])

# %%
report.latency_table(this.bench.get("latency") if this else None)

# %% [markdown]
# ## Against another run (`compare_with`)
#
# Same experiment, same configuration, this run over the other run.

# %%
(compare.between(other, this, "three_way") if other and this
 else "compare_with is not set: only this run's own comparisons are shown above")

# %%
(report.bars_plot(compare.merged(other.experiment("three_way"), three, other.label, this.label))
 if other and this and other.experiment("three_way") and three and not three.planned
 and not other.experiment("three_way").planned else "no second run to plot against")

# %%
compare.latency_side_by_side(other, this) if other and this else "compare_with is not set"
