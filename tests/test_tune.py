"""The tuner's racing on synthetic measurement series with known answers (drift and noise included),
resume from the trial log, and the profile."""
import math
import random

import pytest

from aios_lib.benchmark import tune

# a small space: three axes, 2 x 3 x 2 = 12 configurations
SPACE = [
    tune.Axis("poll", (tune.Level("--poll 50"), tune.Level("--poll 0", (("--poll", "0"),)))),
    tune.Axis("load", (tune.Level("-lm mmap"), tune.Level("-lm mmap+mlock", (("-lm", "mmap+mlock"),)),
                       tune.Level("-lm none", (("-lm", "none"),)))),
    tune.Axis("thp", (tune.Level("THP as found"), tune.Level("THP always", system=(("thp", "always"),)))),
]


def fake(effects: dict[tuple[int, int], float], noise: float = 0.01, drift: float = 0.004, seed: int = 0):
    """A Measure: t/s = 100 x product of each axis level's effect x (1 + drift per round) x noise."""
    rng = random.Random(seed)
    calls = []
    todos = []  # the candidates of every call, in order

    def measure(todo, round_no):
        calls.append(len(todo))
        todos.append(list(todo))
        out = {}
        for label, cand in todo:
            m = 100.0 * (1 + drift * len(calls))
            for a, i in enumerate(cand):
                m *= effects.get((a, i), 1.0)
            out[label] = m * rng.gauss(1, noise)
        return out

    measure.calls = calls
    measure.todos = todos
    return measure


def test_race_eliminates_the_worse_and_stops_when_separated():
    m = fake({(0, 1): 1.08})  # --poll 0 is 8% faster
    cands = {"a": (0, 0, 0), "b": (1, 0, 0)}
    r = tune.race("poll", cands, ("ref", (0, 0, 0)), m, space=SPACE, band=0.02)
    assert r.winner == "b" and "a" in r.eliminated and r.stop.startswith("separated")
    pr = r.paired("a", "b", 0.02)
    assert pr.ci_low <= 1.08 <= pr.ci_high  # the known effect is recovered within its CI
    assert len(r.rounds) <= 5


def test_no_difference_stops_and_keeps_the_cheaper_default():
    m = fake({}, noise=0.003)
    cands = {"defaults": (0, 0, 0), "--poll 0": (1, 0, 0)}
    r = tune.race("poll", cands, ("ref", (0, 0, 0)), m, space=SPACE, band=0.02)
    assert r.stop.startswith("the remaining candidates are equivalent")
    assert r.winner == "defaults" and not r.eliminated


def test_too_noisy_to_tell_runs_to_the_limit_and_keeps_the_default():
    m = fake({(0, 1): 1.01}, noise=0.08)
    r = tune.race("poll", {"defaults": (0, 0, 0), "--poll 0": (1, 0, 0)}, ("ref", (0, 0, 0)), m, space=SPACE,
                  band=0.02, max_rounds=6)
    assert r.stop == "maximum of 6 rounds" and r.winner == "defaults"


@pytest.mark.parametrize("seed", range(5))
def test_coordinate_search_finds_the_optimum_of_a_separable_space(seed):
    effects = {(0, 1): 1.06, (1, 2): 1.10, (1, 1): 0.97, (2, 1): 1.0}  # thp makes no difference
    m = fake(effects, seed=seed)
    res = tune.coordinate_search(SPACE, m, band=0.02)
    assert res["winner"] == (1, 2, 0)  # poll 0, -lm none, THP left as found (no difference: cheaper)
    assert res["label"] == "--poll 0, -lm none"
    # fewer invocations than measuring all 12 configurations for five rounds
    exhaustive = len(tune.all_candidates(SPACE)) * 5
    assert sum(m.calls) < exhaustive * 2 / 3


def test_a_clearly_worse_candidate_is_dropped_after_two_rounds():
    m = fake({(0, 1): 0.80}, noise=0.02)  # --poll 0 is 20% slower: more than 3 bands, in every round
    r = tune.race("poll", {"defaults": (0, 0, 0), "--poll 0": (1, 0, 0)}, None, m, space=SPACE, band=0.02)
    assert r.eliminated == {"--poll 0": 2} and r.rules["--poll 0"].startswith("clearly worse")
    assert len(r.rounds) == 2 and sum(m.calls) == 4 and r.winner == "defaults" and r.stop.startswith("separated")


def test_a_slightly_worse_candidate_is_not_dropped_before_the_ci_can_say_so():
    # 4% slower is less than 3 bands: no 2-round verdict; the race goes on to min_rounds and is then
    # indifferent (the candidate cannot be ahead of the defaults), keeping the defaults
    for seed in range(5):
        m = fake({(0, 1): 0.96}, noise=0.01, seed=seed)
        r = tune.race("poll", {"defaults": (0, 0, 0), "--poll 0": (1, 0, 0)}, None, m, space=SPACE, band=0.02)
        assert len(r.rounds) >= 3 and r.eliminated.get("--poll 0", 3) >= 3 and r.winner == "defaults"


def test_no_difference_at_this_machines_noise_stops_early_and_keeps_the_cheaper_default():
    # invocations spread by 2% (more than the band): equivalence within +-2% would take ~10 rounds;
    # the race is indifferent long before and keeps the defaults
    rounds = []
    for seed in range(10):
        m = fake({}, noise=0.02, seed=seed)
        r = tune.race("poll", {"defaults": (0, 0, 0), "--poll 0": (1, 0, 0)}, None, m, space=SPACE, band=0.02,
                      max_rounds=10)
        assert r.winner == "defaults" and not r.eliminated
        assert r.stop.startswith(("indifferent", "the remaining candidates are equivalent"))
        rounds.append(len(r.rounds))
    assert max(rounds) < 10 and sorted(rounds)[5] <= 4


def test_the_reference_runs_at_the_start_where_it_is_a_candidate_and_at_the_end():
    m = fake({(0, 1): 1.08}, noise=0.01)  # the first race moves away from the defaults
    res = tune.search(SPACE, m, band=0.02)
    ref = tune.REFERENCE
    defaults = tune.default_candidate(SPACE)
    n_warm = len(res["warm_up"])
    assert all(t == [(ref, defaults)] for t in m.todos[:n_warm])  # the warm-up: the reference alone
    first, *middle = res["races"]
    assert defaults in first.labels.values() and first.reference == "defaults"  # a candidate: paired for free
    for r in middle:  # once the defaults are beaten, no race carries them
        assert r.reference == "" and defaults not in r.labels.values()
    searched = sum(len(t) for t in m.todos[n_warm:]) - sum(len(t) for t in m.todos[-len(res["confirm"].rounds):])
    assert searched == sum(len(rnd) for r in res["races"] for rnd in r.rounds)  # nothing else measured
    assert res["confirmed_by"] == "a confirmation race"
    assert all(ref in dict(t) for t in m.todos[-len(res["confirm"].rounds):])  # the end: winner vs reference
    assert res["label"] == "--poll 0" and res["drift"]["ratio"] > 1  # the fake drifts upwards: seen first vs last


def test_the_last_race_is_the_confirmation_when_the_reference_is_a_candidate_there():
    # only the last axis changes: its race pairs the winner and the defaults (seed 1: a draw in which
    # no null race loses the defaults to a 3-round 99% CI by chance, as about 2% of such races do)
    m = fake({(2, 1): 1.3}, noise=0.005, seed=1)
    res = tune.search(SPACE, m, band=0.02)
    assert res["label"] == "THP always" and res["confirmed_by"] == "the last race"
    assert res["confirm"] is res["races"][-1] and res["drift"]["last"] is not None
    assert sum(m.calls) == len(res["warm_up"]) + sum(len(rnd) for r in res["races"] for rnd in r.rounds)


# the benchmark's space (threads x poll x load x THP = 24 configurations on 2 CPUs)
SPACE24 = [
    tune.Axis("threads", (tune.Level("-t 1", (("-t", "1"),)), tune.Level("-t 2", (("-t", "2"),))), default=1),
    *SPACE[:2],
    SPACE[2],
]


def test_a_24_configuration_space_is_solved_in_a_third_of_the_exhaustive_invocations():
    # one strong lever (THP always, +30%), one weak one (--poll 0, +1.5%: inside the band), threads 1
    # much slower, the load mode no difference; noise 1.5% per invocation, drift. Over 20 noise
    # draws: always the optimum's family, and as a rule (not always: a race of three candidates
    # that do not differ sometimes takes 5-8 rounds) within a third of the exhaustive sweep's 96
    # invocations, warm-up, races and confirmation all counted
    exhaustive = len(tune.all_candidates(SPACE24)) * 4  # the benchmark's sweep: every configuration, 4 rounds
    assert exhaustive == 96
    counts = []
    for seed in range(20):
        m = fake({(0, 0): 0.55, (3, 1): 1.30, (1, 1): 1.015}, noise=0.015, seed=seed)
        res = tune.search(SPACE24, m, band=0.02)
        threads, poll, load, thp = res["winner"]
        assert (threads, thp) == (1, 1)  # the optimum's family: both threads, THP always
        assert res["label"] in ("THP always", "--poll 0, THP always")  # within the band of the optimum
        counts.append(sum(m.calls))
    counts.sort()
    assert counts[10] <= exhaustive / 3 and sum(c <= exhaustive / 3 for c in counts) >= 15, counts
    assert counts[-1] < exhaustive / 2, counts


def test_a_later_sweep_races_only_the_axes_something_changed_after():
    m = fake({(0, 1): 1.2}, noise=0.01)  # only the first axis changes: every later race already saw it
    res = tune.coordinate_search(SPACE, m, band=0.02, sweeps=3)
    assert [r.stage for r in res["races"]] == ["sweep 1: poll", "sweep 1: load", "sweep 1: thp"]
    assert res["stop"].startswith("a sweep changed nothing")
    m = fake({(2, 1): 1.2}, noise=0.01)  # the last axis changes: the two before it are raced again, it is not
    res = tune.coordinate_search(SPACE, m, band=0.02, sweeps=3)
    assert [r.stage for r in res["races"]] == ["sweep 1: poll", "sweep 1: load", "sweep 1: thp",
                                               "sweep 2: poll", "sweep 2: load"]
    assert res["label"] == "THP always"


def test_best_so_far_chains_the_paired_ratios_back_to_the_defaults():
    covered = 0
    for seed in range(10):
        m = fake({(0, 1): 1.08, (2, 1): 1.15}, noise=0.01, drift=0.0, seed=seed)
        res = tune.search(SPACE, m, band=0.02)
        assert res["label"] == "--poll 0, THP always"
        rows = tune.best_so_far({"band": 0.02, "races": [r.to_dict() for r in res["races"]]})
        assert [r["winner"] for r in rows] == ["--poll 0", "--poll 0", "--poll 0, THP always"]
        assert rows[1]["ratio"] == rows[0]["ratio"]  # a race the incumbent won changes nothing
        assert abs(rows[-1]["ratio"] / (1.08 * 1.15) - 1) < 0.05  # the chain adds up to the known effect
        assert all(r["ci_low"] < r["ratio"] < r["ci_high"] for r in rows)
        covered += rows[-1]["ci_low"] <= 1.08 * 1.15 <= rows[-1]["ci_high"]
    assert covered >= 8  # a 95% interval (over 2-round races: wide, and now and then narrow by chance)


def test_deadline_ends_the_search_with_the_best_so_far():
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    res = tune.coordinate_search(SPACE, fake({(0, 1): 1.2}), band=0.02, deadline=6.0, clock=clock)
    assert res["races"][-1].stop == "budget ended" or len(res["races"]) < len(SPACE)


def test_resume_replays_the_stored_rounds_and_measures_only_the_rest(tmp_path):
    log = tune.TrialLog(tmp_path / "trials.jsonl")
    m1 = fake({(0, 1): 1.08}, seed=1)
    first = tune.coordinate_search(SPACE, m1, band=0.02, store=log.store)
    with open(log.path, "a") as f:
        f.write('{"stage": "cut by a kill')  # a half-written last line is ignored
    replay = log.replay()
    assert len(replay) == sum(len(r.rounds) for r in first["races"])
    m2 = fake({(0, 1): 1.08}, seed=1)
    again = tune.coordinate_search(SPACE, m2, band=0.02, replay=replay)
    assert again["winner"] == first["winner"] and m2.calls == []  # nothing measured twice


def test_space_lists_what_cannot_apply():
    space, left = tune.space_for(None, ["threads", "poll", "thp", "numa"], nproc=2, default_threads=2,
                                 help_flags={"-t", "--poll"}, unavailable={"thp": "no THP on this kernel"})
    assert [ax.name for ax in space] == ["threads", "poll"]
    assert space[0].default == 1 and [lv.name for lv in space[0].levels] == ["-t 1", "-t 2"]
    why = {x["axis"]: x["why"] for x in left}
    assert why["thp"] == "no THP on this kernel" and "one NUMA node" in why["numa"]


def test_every_known_axis_has_levels_and_the_parameters_refuse_others(tmp_path):
    from aios_lib.params import load_params, ParamsError
    from aios_lib.params.runtime import TUNE_AXES

    space, left = tune.space_for(None, list(TUNE_AXES), nproc=2, default_threads=2, help_flags=set(),
                                 unavailable={}, numa_nodes=2)
    assert sorted(ax.name for ax in space) == sorted(TUNE_AXES) and left == []
    bad = tmp_path / "p.yaml"
    bad.write_text("runtime:\n  tune:\n    axes: [threads, nope]\n")
    with pytest.raises(ParamsError, match=r"runtime\.tune\.axes.*no such axis"):
        load_params(bad)
    bad.write_text("runtime:\n  tune:\n    min_rounds: 9\n    max_rounds: 4\n")
    with pytest.raises(ParamsError, match="min_rounds 9 is more than max_rounds 4"):
        load_params(bad)


def test_profile_carries_flags_process_and_system_settings():
    cand = (1, 1, 1)
    p = tune.profile(SPACE, cand, run_id="r1", machine="m", evidence={"x": 1}, model="x.gguf", commit="abc")
    assert p["profile_version"] == tune.PROFILE_VERSION and p["tune_run"] == "r1"
    assert p["server_flags"] == {"--poll": "0", "-lm": "mmap+mlock"} and p["system"] == {"thp": "always"}
    assert p["threads"] is None and p["label"] == "--poll 0, -lm mmap+mlock, THP always"


def test_warm_up_stops_when_two_invocations_agree():
    vals = iter([80.0, 95.0, 99.0, 99.5, 99.4])
    m = lambda todo, r: {todo[0][0]: next(vals)}  # noqa: E731
    assert tune.warm_up(m, ("ref", (0, 0, 0)), 0.02) == [80.0, 95.0, 99.0, 99.5]
    assert math.isnan(tune.warm_up(lambda t, r: {}, ("ref", (0,)), 0.02, max_runs=2)[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_killed_tune_restores_the_host_and_resumes(tmp_path, llama_build, smollm2):
    """`aios tune` on a tiny SYNTHETIC model, killed with SIGTERM in the middle of its search: THP
    is back to what it was and the trial log is intact; `aios tune --resume` finishes the same run
    without measuring the stored rounds again and writes a profile that phase 06 can name."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    env = {**os.environ, "AIOS_OUTPUTS": str(tmp_path / "outputs")}
    pf = tmp_path / "tune.yaml"
    pf.write_text(yaml.safe_dump({"schema_version": 1, "machine": {"name": "t"}, "runtime": {
        "llama": {"compare_stock": False},
        "tune": {"budget_s": 120, "gen": 8, "axes": ["poll", "load", "thp"], "min_rounds": 2, "max_rounds": 4},
        "synthetic": {"n_embd": 256, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 512, "n_vocab": 512}}}))
    before = thp.read_text() if thp.exists() else None
    p = subprocess.Popen([sys.executable, "-m", "aios_lib.cli", "tune", "--params", str(pf)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    log = None
    while time.time() < deadline:
        logs = list((tmp_path / "outputs").rglob("tune-trials.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 4:
            log = logs[0]
            break
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.5)
    assert log is not None
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    assert (thp.read_text() if thp.exists() else None) == before
    stored = len(log.read_text().splitlines())
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "tune", "--params", str(pf), "--resume", str(log.parent)],
                       env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((log.parent / "results.json").read_text())["08"]["tune"]
    assert rec["resumed_rounds"] >= stored - 1 and rec["live"]["restored"] is True
    prof = yaml.safe_load((log.parent / "tuned-profile.yaml").read_text())
    assert prof["tune_run"] == log.parent.name and "evidence" in prof
    assert (thp.read_text() if thp.exists() else None) == before


def test_aios_tune_writes_run_json_and_the_run_is_in_the_index(tmp_path, monkeypatch):
    """`aios tune` records its run folder as `aios run` does (execute.command_record): run.json with the
    phase running, then ok or failed; outputs/index.html lists the run with the tune's first finding."""
    import json
    from pathlib import Path

    from aios_lib.execute import command_record
    from aios_lib.params import load_params

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    params = load_params(Path(__file__).resolve().parent.parent / "parameters" / "default.yaml")
    d = tmp_path / "outputs" / "box" / "20261202-050000-run-tune"
    d.mkdir(parents=True)
    with command_record(params, d, "aios tune", "08") as meta:
        running = json.loads((d / "run.json").read_text())
        assert running["phases"][0]["status"] == "running" and meta["command"] == "aios tune"
        (d / "results.json").write_text(json.dumps({"08": {"findings": ["The tuned configuration is `THP always`."]}}))
    done = json.loads((d / "run.json").read_text())
    assert done["ok"] is True and done["phases"][0]["phase"] == "08" and done["phases"][0]["status"] == "ok"
    assert done["run_id"] == d.name and done["requested"] == ["08"] and "params" in done
    page = (tmp_path / "outputs" / "index.html").read_text()
    assert d.name in page and "The tuned configuration is `THP always`." in page
    # a resume into the same folder keeps the record and says so; a failure is recorded and raised
    with pytest.raises(KeyboardInterrupt):
        with command_record(params, d, "aios tune", "08"):
            raise KeyboardInterrupt
    again = json.loads((d / "run.json").read_text())
    assert again["started"] == done["started"] and len(again["resumes"]) == 1 and again["ok"] is False
    assert again["phases"][0]["status"] == "failed" and "KeyboardInterrupt" in again["phases"][0]["error"]
