"""Run the numbered notebooks with papermill into one run folder, in order.

Stops at the first failing notebook, names the failing cell, keeps the partial notebook, and
renders every executed notebook to HTML (linking one stylesheet per outputs/ folder). ``run.json``
says what ran and how it ended.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .params import ALL_PHASES, Params, load_params
from .core.paths import notebooks_dir, outputs_dir
from .core.records import new_run_id, read_json, run_dir_for, write_json


@dataclass
class PhaseOutcome:
    phase: str
    notebook: str
    status: str  # ok | failed | missing
    seconds: float
    error: str | None = None
    html: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    plan: bool
    phases: list[PhaseOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.status == "ok" for p in self.phases)


def notebook_for(phase: str) -> Path | None:
    matches = sorted(notebooks_dir().glob(f"{phase}_*.ipynb"))
    return matches[0] if matches else None


def existing_phases() -> list[str]:
    return [p for p in ALL_PHASES if notebook_for(p)]


# One stylesheet per outputs/ folder: nbconvert inlines ~270 kB of the same JupyterLab CSS into every
# HTML it writes; each record links this file instead (a relative link, so it opens from disk too).
STYLESHEET = "notebook.css"


def render_html(ipynb: Path, outputs: Path | None = None) -> Path:
    """``ipynb`` rendered to HTML beside it, its stylesheet linked from ``outputs``/notebook.css.

    The stylesheet is nbconvert's own head CSS (JupyterLab theme, code highlighting), moved out of
    the page unchanged and in order, so a record looks as nbconvert would render it.
    """
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    outputs = Path(outputs or outputs_dir())
    page = BeautifulSoup(HTMLExporter().from_notebook_node(nbformat.read(ipynb, as_version=4))[0], "html.parser")
    styles = page.head.find_all("style")
    if styles:
        _write_if_changed(outputs / STYLESHEET, "\n".join(s.string or "" for s in styles))
        link = page.new_tag("link", rel="stylesheet", href=os.path.relpath(outputs / STYLESHEET, ipynb.parent))
        styles[0].replace_with(link)
        for s in styles[1:]:
            s.decompose()
    out = ipynb.with_suffix(".html")
    out.write_text(str(page), encoding="utf-8")
    return out


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic, and untouched when equal: concurrent runs render into the same outputs/."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def render_records(outputs: Path | None = None) -> list[Path]:
    """Re-render the HTML of every executed notebook under ``outputs`` (after an nbconvert upgrade)."""
    outputs = Path(outputs or outputs_dir())
    return [render_html(nb, outputs) for nb in sorted(outputs.glob("*/*/[0-9][0-9]_*.ipynb"))]


FINDINGS_TAG = "synapse-findings"


def put_findings_first(ipynb: Path, findings: list[str] | None) -> bool:
    """The executed notebook opens with the findings the phase recorded (generated from its
    measurements, never typed): a markdown cell after the title, replaced if it is there already."""
    if not findings:
        return False
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells = [c for c in nb.cells if FINDINGS_TAG not in c.get("metadata", {}).get("tags", [])]
    text = "## Findings\n\n*Generated from this run's measurements (results.json).*\n\n" + \
        "\n".join(f"- {f}" for f in findings)
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [FINDINGS_TAG]})
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, cell)
    nbformat.write(nb, ipynb)
    return True


def synapse_commit(run_dir: Path) -> dict:
    """``{"commit", "dirty"}`` of the Synapse checkout this run is made with (empty outside git),
    probed through the runner so the command is in the run's journal."""
    from .core.journal import Journal
    from .core.paths import project_root
    from .core.runner import Runner

    r = Runner(journal=Journal(run_dir / "commands.jsonl"), phase="run")
    head = r.probe(["git", "-C", str(project_root()), "rev-parse", "HEAD"], check=False, quiet=True)
    if head.rc != 0:
        return {}
    status = r.probe(["git", "-C", str(project_root()), "status", "--porcelain", "--untracked-files=no"],
                     check=False, quiet=True)
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _failure_text(exc: Exception, output: Path) -> str:
    cell = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    first = str(evalue).strip().splitlines()[0] if str(evalue).strip() else ""
    return f"{output.name}: {where} raised {ename}: {first} (partial notebook kept: {output})"


def run_phases(params_file: str | os.PathLike, phases: list[str] | None = None, plan: bool = False,
               label: str = "", kernel_name: str = "synapse", log_output: bool = True) -> RunOutcome:
    import papermill as pm

    params: Params = load_params(params_file)
    wanted = phases or params.phases
    missing = [p for p in wanted if not notebook_for(p)]
    run_id = new_run_id(plan, label)
    run_dir = run_dir_for(params.machine_name(), run_id)
    outcome = RunOutcome(run_dir=run_dir, plan=plan)
    meta = {"run_id": run_id, "machine": params.machine_name(), "plan": plan,
            "params_file": str(params.source_file), "params": params.model_dump(mode="json"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "phases": [], **synapse_commit(run_dir)}
    write_json(run_dir / "run.json", meta)
    for phase in wanted:
        nb = notebook_for(phase)
        if nb is None:
            outcome.phases.append(PhaseOutcome(phase, "", "missing", 0.0, f"no notebook {phase}_*.ipynb in notebooks/"))
            continue
        out = run_dir / nb.name
        t0 = time.time()
        status, error = "ok", None
        try:
            pm.execute_notebook(
                str(nb), str(out),
                parameters={"params_file": str(params.source_file), "run_dir": str(run_dir), "plan": plan},
                kernel_name=kernel_name, cwd=str(nb.parent), log_output=log_output, progress_bar=False,
                report_mode=False,
            )
        except Exception as exc:  # papermill's PapermillExecutionError, or a kernel that died
            status, error = "failed", _failure_text(exc, out)
        html = None
        if out.exists():
            try:
                put_findings_first(out, read_json(run_dir / "results.json").get(phase, {}).get("findings"))
                html = str(render_html(out))
            except Exception as exc:  # a rendering problem must not hide the run's own outcome
                error = (error or "") + f" (HTML rendering failed: {exc})"
        outcome.phases.append(PhaseOutcome(phase, nb.name, status, round(time.time() - t0, 1), error, html))
        meta["phases"] = [p.__dict__ for p in outcome.phases]
        write_json(run_dir / "run.json", meta)
        if status != "ok":
            break
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta["ok"] = outcome.ok and not missing
    meta["phases"] = [p.__dict__ for p in outcome.phases]
    write_json(run_dir / "run.json", meta)
    from .index import write_index

    write_index()
    return outcome


def run_fleet_report(fleet_dir: str | os.PathLike, plan: bool = False, kernel_name: str = "synapse",
                     log_output: bool = False) -> Path:
    """Notebook 09 (the fleet report) executed into the fleet record, and its HTML; returns the HTML
    (or the partial notebook when a cell failed)."""
    import papermill as pm

    d = Path(fleet_dir)
    nb = notebook_for("09")
    out = d / nb.name
    try:
        pm.execute_notebook(str(nb), str(out), parameters={"run_dir": str(d), "plan": plan, "fleet_dir": str(d)},
                            kernel_name=kernel_name, cwd=str(nb.parent), log_output=log_output, progress_bar=False)
    except Exception as exc:  # the fleet's own outcome stands; the report says what failed
        print(_failure_text(exc, out))
    return render_html(out) if out.exists() else out


def load_run(run_dir: str | os.PathLike) -> dict:
    return read_json(Path(run_dir) / "run.json")
