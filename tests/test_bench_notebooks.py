"""Notebooks 05 and 07: sources agree with the .ipynb, and 05 plans its benchmark in plan mode."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sources_and_ipynb_agree():
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_notebooks

    for name in ("05_benchmark", "07_compare"):
        want = build_notebooks.render(ROOT / "notebooks" / "src" / f"{name}.py")
        assert (ROOT / "notebooks" / f"{name}.ipynb").read_text() == want, f"rebuild {name}.ipynb"


def test_plan_mode_lists_every_benchmark_and_runs_none(tmp_path, monkeypatch):
    import nbformat

    from aios_lib.execute import run_phases
    from aios_lib.journal import read_journal

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
    servers = [e for e in entries if "llama-server" in e["cmdline"]]
    assert servers and servers[0]["planned"] and "--metrics" in servers[0]["argv"]
    nb = nbformat.read(outcome.run_dir / "05_benchmark.ipynb", as_version=4)
    text = str([c.get("outputs") for c in nb.cells])
    assert "planned, not run" in text
    assert (outcome.run_dir / "05_benchmark.html").exists() and (outcome.run_dir / "07_compare.html").exists()
