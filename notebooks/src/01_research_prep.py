# %% [markdown]
# # Phase 1: research & prep
#
# The blueprint's Phase 1 asks which CPU this is (AVX2? AVX-512?), how many physical cores it has,
# and prepares the build. This notebook surveys the machine it runs on and answers those questions
# from facts read off the system. Every command it runs is in the run's `commands.jsonl`.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True

# %%
import aios_lib
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="01")
run

# %%
run.plan_summary()
