"""Comparing two run folders (records only), and notebook 07 on them."""
import json

import pytest

from aios_lib.benchmark import compare, report
from aios_lib.measure import experiment, llama_bench
from aios_lib.core.records import write_json


def _rows(fixtures, threads, scale=1.0):
    rows = llama_bench.parse_bench_json((fixtures / "bench" / "llama-bench-smollm2.json").read_text())
    out = []
    for r in rows:
        if r["n_threads"] == threads:
            r = dict(r)
            r["samples_ts"] = [x * scale for x in r["samples_ts"]]
            out.append(r)
    return out


def _three_way(fixtures, scale):
    confs = [{"label": lab, "threads": t, "shown": f"llama-bench -t {t}"}
             for lab, t in (("blueprint", 1), ("defaults", 1), ("runbook", 1))]
    recs = []
    for rnd in range(3):
        for lab in experiment.rotated(["blueprint", "defaults", "runbook"], rnd):
            k = scale * (1.2 if lab == "runbook" else 1.0) * (1 + 0.01 * rnd)
            recs.append({"label": lab, "round": rnd, "planned": False, "load": {"contended": False},
                         "rows": _rows(fixtures, 1, k)})
    return experiment.Experiment("three_way", "three", confs, recs, baseline="blueprint")


def _decomposition(fixtures, scale):
    """Phase 05's proof as the notebook records it: four configurations in the same rounds, one
    invocation (-r 1 each) a sample."""
    labels = ["stock", "native build", "native + flags", "Synapse"]
    gain = {"stock": 1.0, "native build": 1.3, "native + flags": 1.3, "Synapse": 1.4}
    confs = [{"label": lab, "threads": 2, "shown": f"llama-bench ({lab})"} for lab in labels]
    recs = []
    for rnd in range(4):
        for lab in labels:
            k = scale * gain[lab] * (1 + 0.01 * rnd)
            rows = [{**r, "samples_ts": r["samples_ts"][:1]} for r in _rows(fixtures, 1, k)]
            recs.append({"label": lab, "round": rnd, "planned": False, "load": {"contended": False}, "rows": rows})
    return experiment.Experiment("decomposition", "Synapse vs stock", confs, recs, baseline="stock")


def _make_proof_run_dir(path, fixtures, scale, label):
    from aios_lib.benchmark import proof

    path.mkdir(parents=True)
    rec = {"decomposition": _decomposition(fixtures, scale).to_dict(), "band": 0.02,
           "stock_note": "llama.cpp as its releases ship it runs here (haswell module); it is the baseline."}
    rec["findings"] = proof.findings(rec)
    write_json(path / "results.json", {"05": {"proof": rec, "findings": rec["findings"]}})
    write_json(path / "run.json", {"run_id": label})
    return path


def _make_run_dir(path, fixtures, scale, label):
    path.mkdir(parents=True)
    ex = _three_way(fixtures, scale)
    lat = {"planned": False, "threads": 1, "itl_ms": [15.0 * scale + 0.1 * i for i in range(40)]}
    from aios_lib.measure import stats

    lat["jitter"] = stats.jitter(lat["itl_ms"])
    write_json(path / "results.json", {"05": {"three_way": ex.to_dict(), "latency": lat,
                                              "chosen": {"threads": 1, "flags": {}, "why": ["test"]}}})
    write_json(path / "run.json", {"run_id": label})
    return path


def test_within_and_between_runs(tmp_path, fixtures):
    a = compare.load_run(_make_run_dir(tmp_path / "stock", fixtures, 1.0, "stock"))
    b = compare.load_run(_make_run_dir(tmp_path / "aios", fixtures, 1.10, "aios"))
    assert a.label == "stock" and "three_way" in a.experiments()
    own = compare.within(b, "three_way")
    comp = own.comparisons()
    rb = comp[(comp.B == "runbook") & (comp.test == "tg16")].iloc[0]
    assert rb["B/A"] == pytest.approx(1.2, rel=0.01) and rb["significant"]
    df = compare.between(a, b, "three_way")
    assert set(df["config"]) == {"blueprint", "defaults", "runbook"}
    assert (df["B/A"].round(3) == 1.1).all() and df["significant"].all()
    assert (df["CI low"] < 1.1).all() and (df["CI high"] > 1.1).all()
    lat = compare.latency_side_by_side(a, b)
    assert list(lat["run"]) == ["stock", "aios"] and lat.attrs["comparison"]["ratio"] > 1
    m = compare.merged(a.experiment("three_way"), b.experiment("three_way"), "stock", "aios")
    assert len(m.labels) == 6 and m.labels[0] == "stock: blueprint"
    fig = report.bars_plot(m)
    assert len(fig.axes) == len(m.tests())
    lines = compare.summary_lines(b.experiment("three_way"))
    assert any("runbook" in ln and "x1.2" in ln for ln in lines)


def test_plots_from_records(tmp_path, fixtures):
    ex = _three_way(fixtures, 1.0)
    for fig in (report.bars_plot(ex), report.timeline_plot(ex), report.bars_plot(ex, normalize=True)):
        assert fig.axes
    sweep = experiment.Experiment("thread_sweep", "sweep",
                             [{"label": "t=1", "threads": 1}, {"label": "t=2", "threads": 2}],
                             [{"label": "t=1", "round": 0, "rows": _rows(fixtures, 1), "load": {}},
                              {"label": "t=2", "round": 0, "rows": _rows(fixtures, 2), "load": {}}],
                             extra={"best": 1})
    assert len(report.sweep_plot(sweep).axes) == 3
    from aios_lib.benchmark import roofline

    pts = roofline.points_from([ex], 26.7)
    assert pts and all(0 < p.efficiency < 1 for p in pts)
    assert report.roofline_plot(pts, 26.7).axes
    assert isinstance(report.roofline_plot([], None), report.Note)
    assert isinstance(report.sweep_plot(None), report.Note)
    text = report.findings({"threads": 1, "why": ["x"]}, ex, None, None, pts, None, 2)
    assert "runbook" in text and "overhead-bound" in text and "576" in text


def test_missing_record_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json"):
        compare.load_run(tmp_path)


@pytest.mark.slow
def test_notebook_07_compares_two_run_folders(tmp_path, fixtures):
    import nbformat
    import papermill as pm

    from aios_lib.core.paths import notebooks_dir

    a = _make_proof_run_dir(tmp_path / "stock", fixtures, 1.0, "stock")
    b = _make_proof_run_dir(tmp_path / "aios", fixtures, 1.10, "aios")
    out = tmp_path / "07.ipynb"
    pm.execute_notebook(str(notebooks_dir() / "07_compare.ipynb"), str(out), kernel_name="synapse",
                        parameters={"run_dir": str(b), "compare_with": str(a), "plan": True},
                        cwd=str(notebooks_dir()), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "Synapse vs stock on this machine" in text and "x1.400 vs stock" in text
    assert "B/A" in text and "mean stock" in text and "mean aios" in text
    assert text.count("image/png") >= 2  # this run's bars, both runs' bars


def test_aios_bench_prints_the_findings_of_a_record(tmp_path, fixtures, capsys):
    from aios_lib.cli import main

    d = _make_proof_run_dir(tmp_path / "rec", fixtures, 1.0, "rec")
    assert main(["bench", "--from", str(d)]) == 0
    out = capsys.readouterr().out
    verdict = next(ln for ln in out.splitlines() if "Synapse vs stock on this machine" in ln)
    assert "tg16 1.40x [" in verdict and "pp64 1.40x [" in verdict
    assert "The build: gains on tg16 (1.30x" in out and "Runtime flags: changes nothing that matters" in out
    # a record from before the proof existed: its three configurations, paired per round
    old = _make_run_dir(tmp_path / "old", fixtures, 1.0, "old")
    assert main(["bench", "--from", str(old)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "runbook" in ln and "tg16" in ln)
    assert "x1.200 vs blueprint" in line and "95% CI" in line


def test_real_recorded_default_run(fixtures, capsys):
    """A real phase-05 record (default parameters, 2-core VM) re-read and re-rendered from outputs alone."""
    from aios_lib.benchmark import roofline
    from aios_lib.cli import main

    r = compare.load_run(fixtures / "bench" / "run-full")
    ex = r.experiments()
    assert set(ex) == {"three_way", "thread_sweep", "flash_attn", "native_vs_generic", "quant_synthetic"}
    three = ex["three_way"]
    assert three.tests() == ["pp512", "pp1024", "tg128"]
    assert all(len(three.samples(c, "tg128")) == 15 for c in three.labels)  # 3 rounds x -r 5
    assert r.bench["chosen"]["threads"] in (1, 2)
    q = ex["quant_synthetic"].compare("Q4_K_M", "Q5_K_M", "tg32")
    assert q.n_a == q.n_b == 9 and q.ratio < 1 and q.ci_low < q.ratio < q.ci_high
    pts = roofline.points_from([three, ex["quant_synthetic"]], r.bench["bandwidth"]["best"]["read_gbs"])
    small = [p for p in pts if not p.synthetic]
    big = [p for p in pts if p.synthetic]
    assert small and big and max(p.efficiency for p in small) < min(p.efficiency for p in big)
    for fig in (report.sweep_plot(ex["thread_sweep"]), report.timeline_plot(three), report.bars_plot(three),
                report.roofline_plot(pts, r.bench["bandwidth"]["best"]["read_gbs"]),
                report.latency_plot(r.bench["latency"])):
        assert fig.axes
    assert main(["bench", "--from", str(fixtures / "bench" / "run-full")]) == 0
    out = capsys.readouterr().out
    assert "pp1024" in out and "vs blueprint" in out
    same = compare.between(r, r, "three_way")
    assert (same["B/A"] == 1).all() and not same["significant"].any()
