"""Notebooks 05 and 07: 05 plans its benchmark in plan mode (tests/test_notebooks.py checks their sources)."""
import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_plan_mode_lists_every_benchmark_and_runs_none(tmp_path, monkeypatch):
    import nbformat

    from aios_lib.execute import run_phases
    from aios_lib.core.journal import read_journal

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    outcome = run_phases("parameters/default.yaml", ["05", "07"], plan=True, log_output=False)
    assert outcome.ok, outcome.phases
    entries = read_journal(outcome.run_dir / "commands.jsonl")
    benches = [e for e in entries if e["phase"] == "05" and "llama-bench" in e["cmdline"] and "-o" in e["argv"]]
    assert benches and all(e["planned"] and e["rc"] is None for e in benches)
    # -t always explicit; pp512, pp1024 and tg128 as the blueprint asks; 3 interleaved rounds
    assert all("-t" in e["argv"] for e in benches)
    assert any("512,1024" in e["cmdline"] and "-n 128" in e["cmdline"] for e in benches)
    assert sum("bench blueprint round" in (e.get("note") or "") for e in benches) == 3
    servers = [e for e in entries if e["phase"] == "05" and Path(e["argv"][0]).name == "llama-server"]
    assert servers and servers[0]["planned"] and "--metrics" in servers[0]["argv"]
    nb = nbformat.read(outcome.run_dir / "05_benchmark.ipynb", as_version=4)
    text = str([c.get("outputs") for c in nb.cells])
    assert "planned, not run" in text
    assert (outcome.run_dir / "05_benchmark.html").exists() and (outcome.run_dir / "07_compare.html").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_quick_benchmark_phase_and_compare(tmp_path, monkeypatch, llama_build, smollm2, runner):
    """Phase 05 for real on quick sizes (-p 64 -n 16 -r 2, 2 rounds; tiny SYNTHETIC model), then 07."""
    import yaml

    from aios_lib.execute import run_phases
    from aios_lib.core.records import read_json

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    pf = tmp_path / "quick.yaml"
    pf.write_text(yaml.safe_dump({"schema_version": 1, "machine": {"name": "test"}, "runtime": {
        "bench": {"quick": True},
        "synthetic": {"n_embd": 256, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 512, "n_vocab": 512}}}))
    outcome = run_phases(str(pf), ["05", "07"], plan=False, log_output=False)
    assert outcome.ok, [(p.phase, p.error) for p in outcome.phases]
    r = read_json(outcome.run_dir / "results.json")["05"]
    nproc = r["inputs"]["nproc"]
    assert 1 <= r["chosen"]["threads"] <= nproc
    three = r["three_way"]
    assert [c["label"] for c in three["configs"]] == ["blueprint", "defaults", "runbook"]
    assert three["configs"][0]["threads"] == nproc  # -t $(nproc), spelled out
    assert len(three["records"]) == 6 and not any(x["planned"] for x in three["records"])
    for rec in three["records"]:
        assert rec["load"]["wall_s"] > 0 and {row["test"] for row in rec["rows"]} == {"pp64", "tg16"}
        assert all(len(row["samples_ts"]) == 2 for row in rec["rows"])
    assert {c["test"] for c in three["comparisons"]} == {"pp64", "tg16"}
    assert [c["label"] for c in r["thread_sweep"]["configs"]] == [f"t={t}" for t in range(1, nproc + 1)]
    assert r["quant_synthetic"]["comparisons"] and r["native_vs_generic"]["comparisons"]
    assert r["latency"]["jitter"]["n"] > 0 and r["latency"]["jitter"]["p50"] > 0
    assert r["bandwidth"]["best"]["read_gbs"] > 0 and r["roofline"]
    # each point is what its own numbers give, against the measured bandwidth
    for p in r["roofline"]:
        assert p["bandwidth_gbs"] == r["bandwidth"]["best"]["read_gbs"] and p["tg_ts"] > 0 and p["bytes_per_token"] > 0
        assert p["efficiency"] == pytest.approx(p["tg_ts"] * p["bytes_per_token"] / 1e9 / p["bandwidth_gbs"], rel=1e-9)
    # a model that cannot sit in the last-level cache cannot stream its weights faster than memory;
    # smaller ones may beat DRAM bandwidth from cache, so they are not bounded
    from aios_lib.facts.survey import survey

    caches = survey(runner)["cpu"].get("caches") or {}
    llc = max((c.get("total_bytes") or c.get("per_instance_bytes") or 0 for c in caches.values()), default=0)
    if llc:
        assert all(p["efficiency"] <= 1.0 for p in r["roofline"] if p["bytes_per_token"] > 2 * llc), (llc, r["roofline"])
    assert (outcome.run_dir / "05_benchmark.html").exists() and (outcome.run_dir / "07_compare.html").exists()
