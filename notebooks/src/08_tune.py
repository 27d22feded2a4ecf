# %% [markdown]
# # Phase 8: tune until diminishing returns
#
# The blueprint's roadmap ends with "tune until diminishing returns". Phase 5 screens a fixed list
# of knobs one by one; this phase searches their combinations and more axes (threads, polling,
# priority, load mode, CPU placement, THP, scheduling and nice, optionally batch size, KV cache
# type and NUMA), and stops for a reason:
#
# - **Racing, not one number per trial.** On a small machine two invocations of the same command
#   differ as much as the effects searched for, so candidates race: they run in rounds, paired in
#   time. A candidate is eliminated when it is clearly worse than the best after two rounds (behind
#   by more than three bands overall and by more than the band in every round), or later when its
#   ratio to the best has a CI entirely below 1. A race ends when one candidate is left, when every
#   survivor is equivalent to the best within the band, when it is indifferent (no survivor is
#   ahead of the one kept by more than the band, and none can be by more than three bands: more
#   rounds could not change the decision by much), or when the budget ends; without a clear winner
#   the one closest to llama.cpp's defaults wins (a change must earn its place). The record says
#   why each race stopped and by which rule each candidate went.
# - **One axis at a time** (coordinate racing): each axis's levels race with the others held at the
#   current best, in the order of `runtime.tune.axes`, repeated while a pass changes something
#   (`runtime.tune.sweeps`; an axis is raced again only if another axis changed after its race).
#   The reference, llama.cpp's defaults on the verified build, is measured at the start (the
#   warm-up), in every race where it is a candidate, and at the end (the confirmation), so drift
#   over the search is first against last; within a race, pairing cancels it.
# - **Confirmed, then deployed.** The winner races the defaults (and stock, where it runs) until its
#   ratio is known to the target precision or the time is up; the result is written as a tuned
#   profile (`tuned-profile.yaml` in this run's folder) with that evidence. A parameter file that
#   names it (`service.profile`) gives the Phase 6 unit and image its threads, flags, scheduling and
#   THP mode; notebook 06 shows which tune run each value came from.
# - **Resumable and safe.** Every measured round is appended to `tune-trials.jsonl` as it finishes;
#   `aios tune --resume RUN_DIR` continues an interrupted tune without measuring a round twice. Live
#   host settings are restored after the tune and on any failure or interrupt.
#
# `aios tune --params FILE` runs this notebook; `runtime.tune.budget_s` bounds it.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True

# %%
import aios_lib
from aios_lib.benchmark import inputs, report, tune
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="08")
run

# %%
inp = inputs.inputs(run)
inp

# %% [markdown]
# ## The search

# %%
result = tune.tune(run, inp)
run.record("tune", result)
run.record("findings", tune.findings(result))
tune.summary(result)

# %% [markdown]
# ## The space
#
# The axes searched, their levels and llama.cpp's default level; axes this binary or host cannot
# apply are listed with the reason.

# %%
tune.space_table(result)

# %% [markdown]
# ## Every race
#
# Each race: its candidates, how many rounds it took, who was eliminated when, why it stopped and
# who won.

# %%
tune.races_table(result)

# %% [markdown]
# ## Trials over time and the best so far
#
# Every invocation's token generation in the order it ran (the reference marked where it ran), and
# after each race the current best's ratio to the defaults with its 95% CI: each race pairs its
# winner with the best before it, and the ratios chain back to the defaults.

# %%
tune.trials_plot(result)

# %%
report.ratio_plot([{**r, "label": f"{r['race']}. {r['stage']}: {r['winner']}"} for r in tune.best_so_far(result)],
                  "Best so far, against llama.cpp's defaults", band=result.get("band", 0.02))

# %% [markdown]
# ## The confirmation and the profile

# %%
tune.confirm_table(result)

# %%
result.get("profile")

# %% [markdown]
# ## What this phase ran (or, in plan mode, would run)

# %%
run.plan_summary()
