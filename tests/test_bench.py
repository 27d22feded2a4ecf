"""llama-bench parsing on captured real output; the Experiment model; a real (small) llama-bench run."""
import json
import math

import pytest

from aios_lib.facts import llama as llama_facts, load
from aios_lib.measure import experiment, llama_bench, stats


def test_check_flags_refuses_unknown(fixtures):
    h = llama_facts.parse_help((fixtures / "bench" / "llama-bench-help.txt").read_text())
    ok = llama_bench.BenchConfig("a", "/x/llama-bench", "/m.gguf", 2, flags={"-fa": "on", "-lm": "mmap"})
    llama_bench.check_flags(ok, h)
    bad = llama_bench.BenchConfig("a", "/x/llama-bench", "/m.gguf", 2, flags={"-mmp": "0"})
    with pytest.raises(ValueError, match="-mmp"):
        llama_bench.check_flags(bad, h)


def test_argv_has_explicit_threads_and_json():
    c = llama_bench.BenchConfig("x", "/b/llama-bench", "/m/model.gguf", 3, prompt=[512, 1024], gen=[128], reps=4,
                          flags={"-fa": "on"})
    assert c.argv() == ["/b/llama-bench", "-m", "/m/model.gguf", "-p", "512,1024", "-n", "128", "-r", "4",
                        "-t", "3", "-fa", "on", "-o", "json"]
    assert c.shown().startswith("llama-bench -m model.gguf")
    assert llama_bench.BenchConfig("x", "b", "m", 1, prompt=[], gen=[16]).argv()[4] == "0"


def test_parse_real_json(fixtures):
    rows = llama_bench.parse_bench_json((fixtures / "bench" / "llama-bench-smollm2.json").read_text())
    assert [r["test"] for r in rows] == ["pp64", "pp128", "tg16"] * 2
    assert [r["n_threads"] for r in rows] == [1, 1, 1, 2, 2, 2]
    for r in rows:
        assert len(r["samples_ts"]) == 3 and len(r["samples_ns"]) == 3
        assert r["model_size"] == 96576768 and r["model_n_params"] == 134515008
        # llama-bench's avg_ts is the mean of its samples
        assert stats.summarize(r["samples_ts"]).mean == pytest.approx(r["avg_ts"], rel=1e-3)
    # jsonl gives the same rows
    raw = json.loads((fixtures / "bench" / "llama-bench-smollm2.json").read_text())
    jl = "\n".join(json.dumps(x) for x in raw)
    assert [r["avg_ts"] for r in llama_bench.parse_bench_json(jl)] == [r["avg_ts"] for r in rows]
    assert llama_bench.test_name(512, 128) == "pp512+tg128" and llama_bench.test_name(0, 0, 4096) == "pp0@d4096"


def test_proc_stat_and_contention(fixtures):
    text = (fixtures / "bench" / "proc-stat-loadavg.txt").read_text()
    snap = llama_bench.snapshot(load.parse({"load": text}))
    t = load.parse_proc_stat(text)
    assert snap["ncpu"] == 2 and snap["busy"] > 0 and len(snap["loadavg"]) == 3
    # the benchmark's busy leaves steal out (reported apart); the idle-CPU check counts it
    assert snap["busy"] == t.busy_excl_steal == t.busy_incl_steal - t.steal and snap["steal"] == t.steal
    assert snap["idle"] == t.idle_all and snap["total"] == t.total
    before = {"busy": 1000, "steal": 0, "time": 100.0, "children_cpu": 5.0, "loadavg": [0.1, 0, 0]}
    quiet = llama_bench.load_during(before, {"busy": 1000 + 400, "steal": 0, "time": 102.0, "children_cpu": 9.0}, hz=100)
    assert quiet["own_cores"] == 2.0 and quiet["others_cores"] == 0.0 and not quiet["contended"]
    busy = llama_bench.load_during(before, {"busy": 1000 + 400, "steal": 0, "time": 102.0, "children_cpu": 7.0}, hz=100)
    assert busy["others_cores"] == 1.0 and busy["contended"]


def test_rotated_interleaving():
    assert experiment.rotated(["A", "B"], 0) == ["A", "B"] and experiment.rotated(["A", "B"], 1) == ["B", "A"]
    assert experiment.rotated(["A", "B", "C"], 4) == ["B", "C", "A"]


def _fixture_experiment(fixtures):
    rows = llama_bench.parse_bench_json((fixtures / "bench" / "llama-bench-smollm2.json").read_text())
    recs = []
    for rnd in range(2):
        for t in (1, 2):
            recs.append({"label": f"t={t}", "round": rnd, "planned": False,
                         "load": {"contended": t == 2 and rnd == 1},
                         "rows": [r for r in rows if r["n_threads"] == t]})
    confs = [{"label": "t=1", "threads": 1, "shown": "llama-bench -t 1"},
             {"label": "t=2", "threads": 2, "shown": "llama-bench -t 2"}]
    return experiment.Experiment("thread_sweep", "sweep", confs, recs, baseline="t=2")


def test_experiment_statistics_and_roundtrip(fixtures):
    ex = _fixture_experiment(fixtures)
    assert ex.tests() == ["pp64", "pp128", "tg16"]
    assert len(ex.samples("t=1", "tg16")) == 6 and len(ex.rounds("t=1", "tg16")) == 2
    assert len(ex.samples("t=2", "tg16", include_contended=False)) == 3
    assert ex.contended_runs() == 1
    summ = ex.summary()
    assert set(summ["config"]) == {"t=1", "t=2"} and (summ["n"] == 6).all()
    comp = ex.comparisons()
    row = comp[comp.test == "tg16"].iloc[0]
    assert row["A"] == "t=2" and row["B"] == "t=1" and row["B/A"] > 1  # t=2 was contended in the capture
    assert ex.best("tg") == "t=1"
    d = json.loads(json.dumps(ex.to_dict()))
    again = experiment.Experiment.from_dict(d)
    assert again.samples("t=1", "tg16") == ex.samples("t=1", "tg16") and d["comparisons"]
    md = ex._repr_markdown_()
    assert "t=1" in md and "contended" in md


def test_planned_experiment_renders():
    confs = [{"label": "a", "shown": "llama-bench -t 2"}]
    ex = experiment.Experiment("x", "X", confs, [{"label": "a", "planned": True, "rows": []}])
    assert ex.planned and "planned, not run" in ex._repr_markdown_()
    assert list(ex.summary()["status"]) == ["planned, not run"]
    assert ex.best() is None


def _rounds_experiment(means: dict[str, list[float]], test: str = "tg32"):
    confs = [{"label": k, "threads": int(k.split("=")[1])} for k in means]
    recs = [{"label": k, "round": i, "planned": False, "load": {"contended": False},
             "rows": [{"test": test, "samples_ts": [v]}]} for k, vs in means.items() for i, v in enumerate(vs)]
    return experiment.Experiment("thread_sweep", "sweep", confs, recs)


def test_sweep_keeps_the_default_unless_another_count_is_shown_faster():
    from aios_lib.benchmark import proof

    faster = _rounds_experiment({"t=1": [30.0, 30.6, 29.8, 30.3], "t=2": [20.0, 20.5, 19.7, 20.2]})
    assert proof._best_threads(faster, "t=2", 0.02) == 1  # the winning config's threads field, not its label
    tie = _rounds_experiment({"t=1": [20.0, 21.0, 19.5, 20.4], "t=2": [20.1, 20.8, 19.9, 20.2]})
    assert proof._best_threads(tie, "t=2", 0.02) is None  # no CI above 1: llama.cpp's default stays
    assert proof._best_threads(experiment.Experiment("s", "s", [], []), "t=2", 0.02) is None  # planned


@pytest.mark.slow
def test_real_llama_bench_run_through_bench(llama_build, smollm2, make_run):
    run = make_run({"runtime": {"bench": {"quick": True}}}, phase="05")
    h = llama_facts.parse_help(run.runner.probe([str(llama_build.binary("llama-bench")), "--help"]).stdout)
    confs = [llama_bench.BenchConfig("t=1", str(llama_build.binary("llama-bench")), str(smollm2.path), 1,
                               prompt=[32], gen=[8], reps=2)]
    ex = experiment.experiment(run, "smoke", "smoke", confs, rounds=2, help_info=h)
    assert not ex.planned and ex.tests() == ["pp32", "tg8"]
    tg = ex.samples("t=1", "tg8")
    assert len(tg) == 4 and all(x > 1 for x in tg)
    for rec in ex.records:
        assert "-t 1" in rec["command"] and rec["load"]["wall_s"] > 0 and rec["load"]["own_cores"] > 0
        assert rec["rows"][0]["n_threads"] == 1
    s = stats.summarize(tg)
    assert s.ci_low <= s.mean <= s.ci_high and math.isfinite(s.cv)
    # the journal has every invocation
    from aios_lib.core.journal import read_journal

    cmds = [e["cmdline"] for e in read_journal(run.dir / "commands.jsonl") if "llama-bench" in e["cmdline"]]
    assert sum("-o json" in c for c in cmds) == 2


def test_best_ignores_contended_runs_when_clean_ones_exist():
    def rec(label, rnd, ts, contended):
        return {"label": label, "round": rnd, "planned": False, "load": {"contended": contended},
                "rows": [{"test": "tg16", "samples_ts": ts}]}

    confs = [{"label": "t=1", "threads": 1}, {"label": "t=2", "threads": 2}]
    ex = experiment.Experiment("s", "s", confs, [rec("t=1", 0, [60, 61], False), rec("t=2", 0, [90, 95], False),
                                            rec("t=1", 1, [200, 210], True), rec("t=2", 1, [92, 93], False)])
    assert ex.best("tg") == "t=2"
    only_contended = experiment.Experiment("s", "s", confs, [rec("t=1", 0, [200], True), rec("t=2", 0, [90], False)])
    assert only_contended.best("tg") == "t=1"  # no clean t=1 run: all samples count
