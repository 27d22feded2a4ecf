"""aios run / aios plan: papermill execution into one run folder."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from aios_lib.execute import existing_phases, render_html, render_records, run_phases
from aios_lib.core.journal import read_journal

ROOT = Path(__file__).resolve().parent.parent


def _aios(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aios_lib.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=1800)


def test_plan_every_notebook_runs_nothing_that_changes(tmp_path):
    """`aios plan` executes every notebook that exists, top to bottom, and the journal holds only
    planned entries for changing commands: probes ran, nothing else did."""
    phases = existing_phases()
    assert "01" in phases
    r = _aios("plan", *phases, "--params", "parameters/default.yaml", "--quiet",
              env={"AIOS_OUTPUTS": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    run_dirs = list(tmp_path.glob("*/*-plan"))
    assert len(run_dirs) == 1
    d = run_dirs[0]
    meta = json.loads((d / "run.json").read_text())
    assert meta["plan"] is True and meta["ok"] is True
    assert [p["phase"] for p in meta["phases"]] == phases
    for p in phases:
        nb = next(d.glob(f"{p}_*.ipynb"))
        assert '<link href="../../notebook.css" rel="stylesheet"/>' in nb.with_suffix(".html").read_text()
    assert (tmp_path / "notebook.css").exists()
    entries = read_journal(d / "commands.jsonl")
    assert entries, "the survey's probes are journaled"
    ran = [e for e in entries if not e["planned"]]
    assert all(e["kind"] == "probe" for e in ran), [e["cmdline"] for e in ran if e["kind"] != "probe"]
    assert "command(s) would change the system" in r.stdout
    assert (tmp_path / "index.html").exists()


def _fake_root(tmp_path, cells):
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / "parameters", root / "parameters")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "synapse", "display_name": "Synapse", "language": "python"}
    p = nbformat.v4.new_code_cell('params_file = ""\nrun_dir = None\nplan = True')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, root / "notebooks" / "01_research_prep.ipynb")
    nbformat.write(nb, root / "notebooks" / "04_ai_runtime.ipynb")
    return root


def test_stops_at_first_failure_and_keeps_partial_notebook(tmp_path, monkeypatch):
    root = _fake_root(tmp_path, ["x = 1", "raise RuntimeError('phase broke here')", "y = 2"])
    monkeypatch.setenv("AIOS_ROOT", str(root))
    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "out"))
    outcome = run_phases(root / "parameters" / "default.yaml", ["01", "04"], plan=True, log_output=False)
    assert not outcome.ok
    assert [p.status for p in outcome.phases] == ["failed"]  # 04 never started
    err = outcome.phases[0].error
    assert "RuntimeError" in err and "phase broke here" in err and "cell [" in err
    partial = outcome.run_dir / "01_research_prep.ipynb"
    assert partial.exists() and partial.with_suffix(".html").exists()
    meta = json.loads((outcome.run_dir / "run.json").read_text())
    assert meta["ok"] is False and meta["phases"][0]["status"] == "failed"


def test_cli_reports_failure_with_exit_1(tmp_path):
    root = _fake_root(tmp_path, ["raise ValueError('nope')"])
    r = _aios("plan", "01", "--params", str(root / "parameters" / "default.yaml"), "--quiet",
              env={"AIOS_ROOT": str(root), "AIOS_OUTPUTS": str(tmp_path / "out")})
    assert r.returncode == 1
    assert "failed" in r.stdout and "ValueError" in r.stdout


def test_unknown_phase_is_exit_2():
    r = _aios("plan", "99")
    assert r.returncode == 2 and "unknown phase" in r.stderr


def _without_stylesheets(html: str) -> tuple[str, str]:
    """(page without its head's <style> elements and stylesheet <link>s, their CSS joined in order)."""
    head, body = html.split("</head>", 1)
    css = "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", head, flags=re.S))
    head = re.sub(r"<style[^>]*>.*?</style>|<link [^>]*rel=\"stylesheet\"[^>]*>", "", head, flags=re.S)
    head = re.sub(r"\n\s*\n", "\n", head)  # the blank lines they leave
    return head + "</head>" + body, css


def test_html_links_one_stylesheet_per_outputs_folder_and_renders_like_nbconvert(tmp_path):
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell("import pandas as pd\npd.DataFrame({'a': [1]})", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/html": "<table><tr><td>1</td></tr></table>",
                                                              "text/plain": "a 1"}, execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# Phase\n\nWhy."), cell]
    outputs = tmp_path / "outputs"
    for run in ("m/run-a", "m/run-b"):
        (outputs / run).mkdir(parents=True)
        nbformat.write(nb, outputs / run / "01_x.ipynb")

    html = render_html(outputs / "m/run-a/01_x.ipynb", outputs)
    assert html == outputs / "m/run-a/01_x.html"
    stylesheet = outputs / "notebook.css"
    stock_page, stock_css = _without_stylesheets(HTMLExporter().from_notebook_node(nb)[0])
    assert len(stock_css) > 100_000  # what nbconvert inlines into every page
    assert stylesheet.read_text() == stock_css
    text = html.read_text()
    assert "<style" not in text.split("</head>")[0]
    assert text.count('rel="stylesheet"') == 1 and '<link href="../../notebook.css" rel="stylesheet"/>' in text
    page, css = _without_stylesheets(text)
    assert page == stock_page and css == ""  # only the CSS moved

    before = stylesheet.stat().st_mtime_ns
    assert render_records(outputs) == [outputs / "m/run-a/01_x.html", outputs / "m/run-b/01_x.html"]
    assert stylesheet.stat().st_mtime_ns == before  # written once, not per page
    assert (outputs / "m/run-b/01_x.html").read_text() == text


def _committed_notebooks():
    root = Path(__file__).resolve().parent.parent / "outputs"
    return sorted(root.glob("*/*/[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("ipynb", _committed_notebooks(), ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.stem}")
def test_committed_record_rerenders_identically_from_outputs_alone(ipynb, tmp_path):
    """Every committed page is what its executed notebook renders to, with nothing but outputs/: a
    copy of the record (and the shared stylesheet) rendered elsewhere gives the same HTML and CSS."""
    outputs = ipynb.parent.parent.parent
    copy = tmp_path / "outputs" / ipynb.parent.parent.name / ipynb.parent.name
    copy.mkdir(parents=True)
    shutil.copy2(ipynb, copy / ipynb.name)
    html = render_html(copy / ipynb.name, tmp_path / "outputs")
    assert html.read_text(encoding="utf-8") == ipynb.with_suffix(".html").read_text(encoding="utf-8")
    assert (tmp_path / "outputs" / "notebook.css").read_text() == (outputs / "notebook.css").read_text()
