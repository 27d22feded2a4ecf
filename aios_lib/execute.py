"""Run the numbered notebooks with papermill into one run folder, in order.

Stops at the first failing notebook, names the failing cell, keeps the partial notebook, and
renders every executed notebook to HTML (linking one stylesheet per outputs/ folder). ``run.json``
says what was asked for, what ran and how it ended: a phase is ``running`` from its start, so a
killed run shows where it stopped, and :func:`resume_run` continues it from there.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .params import ALL_PHASES, Params, load_params
from .core.paths import notebooks_dir, outputs_dir
from .core.progress import HEADLESS_ENV
from .core.records import new_run_id, read_json, run_dir_for, write_json


@dataclass
class PhaseOutcome:
    phase: str
    notebook: str
    status: str  # running (until it ends; a killed run leaves it) | ok | failed | missing
    seconds: float
    error: str | None = None
    html: str | None = None
    started: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    plan: bool
    phases: list[PhaseOutcome] = field(default_factory=list)
    #: the phase a resumed run started from (None: a new run, or nothing was left to resume)
    resumed_from: str | None = None

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


@contextmanager
def _environment(**values: str):
    """``values`` in os.environ while the block runs: papermill's kernels inherit this process's
    environment, and this is how a kernel learns that nobody watches it (plain progress lines,
    never an interactive prompt)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_run_meta(params: Params, run_dir: Path, plan: bool, requested: list[str], started: str | None = None) -> dict:
    """The ``run.json`` a run folder starts with (``aios run`` and the commands of :func:`command_record`)."""
    return {"run_id": run_dir.name, "machine": params.machine_name(), "plan": plan,
            "params_file": str(params.source_file), "params": params.model_dump(mode="json"),
            "started": started or time.strftime("%Y-%m-%dT%H:%M:%S"), "requested": requested, "phases": [],
            **synapse_commit(run_dir)}


def run_phases(params_file: str | os.PathLike, phases: list[str] | None = None, plan: bool = False,
               label: str = "", kernel_name: str = "synapse", log_output: bool = True) -> RunOutcome:
    """Run ``phases`` (default: the parameters' list) into a new run folder, in order, stopping at
    the first failure. What a killed earlier run left is put back first (:func:`aios_lib.resume.recover`)."""
    from .core.records import hold_run_folder

    params: Params = load_params(params_file)
    wanted = phases or params.phases
    run_id = new_run_id(plan, label)
    run_dir = run_dir_for(params.machine_name(), run_id)
    hold_run_folder(run_dir)
    meta = new_run_meta(params, run_dir, plan, list(wanted))
    write_json(run_dir / "run.json", meta)
    found = _recover(params, run_dir, plan)
    if found:
        meta["leftovers"] = found
    return _run_loop(params, run_dir, meta, wanted, [], plan, kernel_name, log_output)


def resume_run(run_dir: str | os.PathLike, kernel_name: str = "synapse", log_output: bool = True,
               wait_s: float = 20.0) -> RunOutcome:
    """``aios run --resume``: continue the run in ``run_dir`` from its first unfinished phase, into
    the same folder, with the parameters it started with.

    The phases that finished stay as they are (notebooks, HTML, results). The unfinished phase's
    partial notebook and its results move to ``attempts/<n>/`` (the journal keeps everything), the
    leftovers of the kill are put back, and the phase runs again from its start: its steps find
    what is done in the cache or on the target and clean or finish what was left half-done."""
    from . import resume
    from .core.records import claim_run_folder, hold_run_folder

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "run.json")
    if not meta:
        raise resume.ResumeRefused(f"{run_dir}: no run.json here; name a run folder, outputs/<machine>/<run-id>")
    resume.plan_resume(run_dir)  # refuses a plan record or a finished run before reading its parameters
    params = resume.recorded_params(run_dir, meta)
    rp = resume.plan_resume(run_dir, params.model_dump(mode="json"))  # and other parameters
    claimed = claim_run_folder(run_dir, wait_s)
    if claimed is None:
        raise resume.ResumeRefused(f"{run_dir}: a process still works in this run folder (the run is still going, or "
                                   "what a killed run started has not stopped yet); wait for it, then resume")
    hold_run_folder(run_dir, claimed)
    _set_aside(run_dir, rp)
    meta["phases"] = [p for p in meta.get("phases") or [] if p.get("phase") in rp.done]
    for k in ("finished", "ok"):
        meta.pop(k, None)
    meta["requested"] = rp.requested
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempt": rp.attempt, "how_it_ended": rp.how_it_ended,
             "kept": rp.done, "from": rp.todo[0], "set_aside": f"attempts/{rp.attempt}", **synapse_commit(run_dir)}
    meta.setdefault("resumes", []).append(entry)
    write_json(run_dir / "run.json", meta)
    from .context import open_run

    run = open_run(params, run_dir=run_dir, plan=False, phase="resume")
    run.runner.note(f"aios run --resume (attempt {rp.attempt}): {rp.how_it_ended}; phases "
                    f"{', '.join(rp.done) or 'none'} kept, {', '.join(rp.todo)} run again from {rp.todo[0]}; the "
                    f"partial notebook and results of the unfinished phase are in attempts/{rp.attempt}/")
    entry["leftovers"] = _recover(params, run_dir, False, run=run)
    write_json(run_dir / "run.json", meta)
    kept = [PhaseOutcome(**_known(p)) for p in meta["phases"]]
    out = _run_loop(params, run_dir, meta, rp.todo, kept, False, kernel_name, log_output)
    out.resumed_from = rp.todo[0]
    return out


@contextmanager
def command_record(params: Params, run_dir: Path, command: str, phase: str):
    """``run.json`` for a command that runs one phase's library call outside papermill (``aios tune``),
    written as :func:`run_phases` writes it (the phase ``running`` from its start, then ``ok`` or
    ``failed`` with its seconds), so the run is in outputs/index.html. A folder that has a run.json
    already (``--resume``) keeps it and gets a ``resumes`` entry. Yields the metadata."""
    from .index import write_index

    run_dir = Path(run_dir)
    meta = read_json(run_dir / "run.json") or {}
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if meta:
        for k in ("finished", "ok"):
            meta.pop(k, None)
        meta.setdefault("resumes", []).append({"time": started, "command": command, **synapse_commit(run_dir)})
    else:
        meta = {**new_run_meta(params, run_dir, False, [phase], started), "command": command}
    earlier = [p for p in meta.get("phases") or [] if p.get("phase") != phase]
    meta["phases"] = earlier + [PhaseOutcome(phase, "", "running", 0.0, started=started).__dict__]
    write_json(run_dir / "run.json", meta)
    t0 = time.time()
    status, error = "failed", None
    try:
        yield meta
        status = "ok"
    except BaseException as exc:  # an interrupt too: the record says how it ended, the exception goes on
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        raise
    finally:
        meta["phases"] = earlier + [PhaseOutcome(phase, "", status, round(time.time() - t0, 1), error,
                                                 started=started).__dict__]
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        meta["ok"] = status == "ok"
        write_json(run_dir / "run.json", meta)
        try:
            write_index()
        except Exception as exc:  # the command's own outcome stands; the index is rebuilt by the next run
            print(f"outputs/index.html not updated: {exc}", file=sys.stderr)


def _known(d: dict) -> dict:
    return {k: v for k, v in d.items() if k in PhaseOutcome.__dataclass_fields__}


def _recover(params: Params, run_dir: Path, plan: bool, run=None) -> list[str]:
    """What a killed earlier run left, put back before the first phase (journaled, phase "run")."""
    from .context import open_run
    from .resume import recover

    run = run or open_run(params, run_dir=run_dir, plan=plan, phase="run")
    return recover(run)


def _set_aside(run_dir: Path, rp) -> None:
    """Move the unfinished phases' notebooks, HTML and results.json sections to
    ``attempts/<n>/``: the phase starts afresh, the record of the attempt is kept."""
    dest = run_dir / "attempts" / str(rp.attempt)
    results = read_json(run_dir / "results.json") or {}
    moved = {ph: results.pop(ph) for ph in rp.todo if ph in results}
    files = [f for ph in rp.todo for f in sorted(run_dir.glob(f"{ph}_*")) if f.suffix in (".ipynb", ".html")]
    if not (moved or files):
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.replace(f, dest / f.name)
    if moved:
        write_json(dest / "results.json", moved)
        write_json(run_dir / "results.json", results)


def _run_loop(params: Params, run_dir: Path, meta: dict, wanted: list[str], kept: list[PhaseOutcome], plan: bool,
              kernel_name: str, log_output: bool) -> RunOutcome:
    import papermill as pm

    missing = [p for p in wanted if not notebook_for(p)]
    outcome = RunOutcome(run_dir=run_dir, plan=plan, phases=list(kept))

    def save(extra: list[dict] = ()) -> None:
        meta["phases"] = [p.__dict__ for p in outcome.phases] + list(extra)
        write_json(run_dir / "run.json", meta)

    for phase in wanted:
        nb = notebook_for(phase)
        if nb is None:
            outcome.phases.append(PhaseOutcome(phase, "", "missing", 0.0, f"no notebook {phase}_*.ipynb in notebooks/"))
            continue
        out = run_dir / nb.name
        t0 = time.time()
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        # written before the phase starts: a run killed in this phase says so, and a resume starts here
        save([PhaseOutcome(phase, nb.name, "running", 0.0, started=started).__dict__])
        status, error = "ok", None
        try:
            with _environment(**{HEADLESS_ENV: "1"}):
                pm.execute_notebook(
                    str(nb), str(out),
                    parameters={"params_file": str(params.source_file), "run_dir": str(run_dir), "plan": plan},
                    kernel_name=kernel_name, cwd=str(nb.parent), progress_bar=False, report_mode=False,
                    # the cells' printed output, as it comes, once (papermill's log_output would send
                    # stderr through logging a second time, and stdout nowhere)
                    stdout_file=sys.stdout if log_output else None, stderr_file=sys.stderr if log_output else None,
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
        outcome.phases.append(PhaseOutcome(phase, nb.name, status, round(time.time() - t0, 1), error, html,
                                           started=started))
        save()
        if status != "ok":
            break
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    meta["ok"] = outcome.ok and not missing
    save()
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
