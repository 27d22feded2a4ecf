#!/usr/bin/env python3
"""Is the tuner worth its time? (a benchmark of the project, not a timed test)

Measures every configuration of a small space (threads x polling x load mode x THP: 24 on a
2-CPU machine) in interleaved rounds to find the exhaustive optimum, runs the tuner with three
seeds on the same space, and races each seed's choice against the optimum in paired rounds.
Prints, per seed, the tuner's choice, its ratio to the optimum with a 95% CI, and the share of the
exhaustive measurement time it used: every invocation the tuner makes is timed and counted (its
warm-up, its races and its confirmation against the defaults). Target: within 2% of the optimum at
a third of the time.

    .venv/bin/python bench/tune_vs_exhaustive.py [--params parameters/default.yaml] [--rounds 4]

Uses phase 4's verified build and SYNTHETIC model (built if missing). Run it on an idle machine;
it takes about half an hour on 2 cores with the default model.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aios_lib.benchmark import inputs, tune  # noqa: E402
from aios_lib.context import open_run  # noqa: E402
from aios_lib.core.records import new_run_id, run_dir_for  # noqa: E402
from aios_lib.params import load_params  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="parameters/default.yaml")
    ap.add_argument("--axes", default="threads,poll,load,thp", help="comma-separated tune axes")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of the exhaustive sweep")
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    params = load_params(a.params)
    run = open_run(params, run_dir=run_dir_for(params.machine_name(), new_run_id(False, "tune-vs-exhaustive")),
                   phase="08")
    res = tune.versus_exhaustive(run, inputs.inputs(run), a.axes.split(","), rounds=a.rounds,
                                 seeds=[int(s) for s in a.seeds.split(",")])
    run.record("versus_exhaustive", res)
    print(json.dumps({k: res[k] for k in ("size", "space", "left_out")}, indent=None))
    for row in res["tuner"]:
        print(tune.versus_line(row))
    print(f"record: {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
