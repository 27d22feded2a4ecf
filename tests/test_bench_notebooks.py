"""Notebooks 05 and 07: 05 plans its proof in plan mode; for real on quick sizes it measures every
experiment, restores the host, and writes findings that agree with its own numbers."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_plan_mode_lists_every_benchmark_and_runs_none(tmp_path, monkeypatch):
    import nbformat

    from aios_lib.core.journal import read_journal
    from aios_lib.execute import run_phases

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    thp_before = THP.read_text() if THP.exists() else None
    outcome = run_phases("parameters/default.yaml", ["05", "07"], plan=True, log_output=False)
    assert outcome.ok, outcome.phases
    assert (THP.read_text() if THP.exists() else None) == thp_before  # plan mode changes no host setting
    entries = read_journal(outcome.run_dir / "commands.jsonl")
    benches = [e for e in entries if e["phase"] == "05" and "llama-bench" in e["cmdline"] and "-o" in e["argv"]]
    assert benches and all(e["planned"] and e["rc"] is None for e in benches)
    assert all("-t" in e["argv"] for e in benches)  # -t always explicit
    notes = " ".join(e.get("note") or "" for e in benches)
    for label in ("t=1", "native, as found", "+ poll 0", "all - poll 0", "native build", "Synapse", "Q4_K_M"):
        assert f"bench {label} round 1" in notes, label
    # the knob screen's process settings become an argv prefix; the decomposition runs -p 64 -n 32
    assert any(e["argv"][:3] == ["chrt", "--batch", "0"] for e in benches)
    assert any("-p 64 -n 32" in e["cmdline"] for e in benches)
    servers = [e for e in entries if e["phase"] == "05" and Path(e["argv"][0]).name == "llama-server"]
    assert len(servers) >= 2 and all(e["planned"] and "--metrics" in e["argv"] for e in servers)
    nb = nbformat.read(outcome.run_dir / "05_benchmark.ipynb", as_version=4)
    text = str([c.get("outputs") for c in nb.cells])
    assert "planned, not measured" in text
    assert (outcome.run_dir / "05_benchmark.html").exists() and (outcome.run_dir / "07_compare.html").exists()


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\]", text)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_quick_proof_restores_the_host_and_its_findings_agree(tmp_path, monkeypatch, llama_build, smollm2):
    """Phase 05 for real on quick sizes (a tiny SYNTHETIC model, a 60 s budget, no release build),
    then 07: every experiment measured, every live setting restored, the findings generated from
    the record (a number in them is a ratio the record holds)."""
    import yaml

    from aios_lib.benchmark import proof
    from aios_lib.cli import main
    from aios_lib.core.journal import read_journal
    from aios_lib.core.records import read_json
    from aios_lib.execute import run_phases
    from aios_lib.measure.experiment import Experiment

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    pf = tmp_path / "quick.yaml"
    pf.write_text(yaml.safe_dump({"schema_version": 1, "machine": {"name": "test"}, "runtime": {
        "llama": {"compare_stock": False},
        "bench": {"quick": True, "budget_s": 60, "proof_prompt": 16, "proof_gen": 8, "screen_gen": 8},
        "synthetic": {"n_embd": 256, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "n_ff": 512, "n_vocab": 512}}}))
    thp_before = THP.read_text() if THP.exists() else None
    outcome = run_phases(str(pf), ["05", "07"], plan=False, log_output=False)
    assert outcome.ok, [(p.phase, p.error) for p in outcome.phases]
    r = read_json(outcome.run_dir / "results.json")["05"]
    rec = r["proof"]
    nproc = r["inputs"]["nproc"]
    # every experiment ran, one invocation per configuration per round
    sweep = Experiment.from_dict(rec["sweep"])
    assert [c["label"] for c in sweep.configs] == [f"t={t}" for t in range(1, nproc + 1)] and not sweep.planned
    screen = Experiment.from_dict(rec["screen"])
    assert "native, as found" in screen.labels and len(screen.labels) == 2 * len(rec["knobs"]) + 2
    d = Experiment.from_dict(rec["decomposition"])
    assert d.labels == ["native build", "native + flags", "Synapse"]  # no release build: starts at the native build
    stop = d.extra["stop"]
    assert stop["reason"] in ("precision", "budget", "max_rounds") and stop["rounds"] >= 3
    assert all(len(d.round_means(lab, "tg8")) == stop["rounds"] for lab in d.labels)
    assert {x["label"] for x in rec["served"]["sessions"]} == {"native, as found", "Synapse"}
    assert rec["served"]["ratios"]["gen_tps"]["rounds"] >= 2
    assert {row["quantisation"] for row in proof.quant_rows(rec)} == {"Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"}
    assert rec["bandwidth"]["invocations"][0]["best"]["read_gbs"] > 0
    # the host is as it was, and the journal shows each change and its restoration
    assert rec["live"]["restored"] is True
    if THP.exists():
        assert THP.read_text() == thp_before
        changes = rec["live"]["changes"]
        assert sum(c["action"] == "apply" for c in changes) == sum(c["action"] == "restore" for c in changes)
        tees = [e for e in read_journal(outcome.run_dir / "commands.jsonl") if e["argv"][:2] == ["tee", str(THP)]]
        assert len(tees) == len(changes)
    # the findings are generated from the record, and re-generating them gives the same words
    assert rec["findings"] == proof.findings(rec) and r["findings"] == rec["findings"]
    verdict = next(f for f in rec["findings"] if f.startswith("Synapse vs"))
    pr = d.paired("native build", "Synapse", "tg8")
    assert f"tg8 {pr.ratio:.2f}x [{pr.ci_low:.2f}, {pr.ci_high:.2f}]" in verdict
    for f in rec["findings"]:
        for n in _numbers(f):
            assert n in " ".join(proof.findings(rec))
    # phase 06 gets the chosen threads and llama-server flags
    assert 1 <= r["chosen"]["threads"] <= nproc and isinstance(r["chosen"]["server_flags"], dict)
    # the executed notebook opens with the findings; aios bench prints them from the record
    import nbformat

    nb = nbformat.read(outcome.run_dir / "05_benchmark.ipynb", as_version=4)
    assert "## Findings" in nb.cells[1].source and verdict in nb.cells[1].source
    assert main(["bench", "--from", str(outcome.run_dir)]) == 0
