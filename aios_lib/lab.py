"""Stepping through in JupyterLab: a session works on copies of the notebooks, never the templates.

``aios lab --params FILE [PHASE ...]`` (``make lab``) prepares a run folder
``outputs/<machine>/<run-id>-lab/`` holding a copy of each phase's notebook with its ``parameters``
cell filled in (``params_file``, ``run_dir``, ``plan``, as papermill's prepare-only step would),
then serves JupyterLab on that folder. What the person executes and saves there is the run's
record: every save updates ``run.json`` (each phase's outcome, read from the saved notebook), the
phase's HTML and ``outputs/index.html``; stopping the server (Ctrl-C) closes the record.

The tracked notebooks in notebooks/ stay templates: the server's root is the session folder, so
JupyterLab's autosave never writes them.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import re
import secrets
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import nbformat

from .core import cache
from .core.records import new_run_id, read_json, run_dir_for, write_json
from .params import Params, load_params

SESSION = "lab"
PARAMETER_NAMES = ("params_file", "run_dir", "plan")


# ---- preparing a session ------------------------------------------------------------------
def inject_parameters(nb, values: dict[str, Any], header: str | None = None) -> bool:
    """Set ``values`` in the notebook's ``parameters`` cell, in place: each ``name = ...`` line is
    rewritten, comments stay, and ``header`` replaces the comment lines above the first one (the
    template's note). Unlike papermill's separate injected cell, the one cell a person edits
    (``plan = False``) is the one that counts. False when the notebook has no such cell."""
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return False
    source = cell.source.splitlines()
    if header is not None:
        while source and source[0].startswith("#"):
            source.pop(0)
        source = header.splitlines() + source
    lines, seen = [], set()
    for line in source:
        m = re.match(r"^(\w+)\s*=", line)
        if m and m.group(1) in values:
            seen.add(m.group(1))
            line = f"{m.group(1)} = {values[m.group(1)]!r}"
        lines.append(line)
    lines += [f"{k} = {v!r}" for k, v in values.items() if k not in seen]
    cell.source = "\n".join(lines)
    return True


@dataclass
class Session:
    run_dir: Path
    run_id: str
    phases: list[str]
    notebooks: list[Path] = field(default_factory=list)


def prepare(params_file: str | os.PathLike, phases: list[str] | None = None, plan: bool = True,
            label: str = SESSION) -> Session:
    """A run folder with a copy of each phase's notebook, its parameters filled in; ``run.json``
    lists the phases as "not run" and the session is in the index from the start."""
    from .execute import notebook_for
    from .index import write_index

    params: Params = load_params(params_file)
    wanted = phases or params.phases
    missing = [p for p in wanted if notebook_for(p) is None]
    if missing:
        raise FileNotFoundError(f"no notebook for phase(s) {', '.join(missing)} in notebooks/")
    run_id = new_run_id(plan, label)
    run_dir = run_dir_for(params.machine_name(), run_id)
    session = Session(run_dir, run_id, list(wanted))
    meta = {"run_id": run_id, "machine": params.machine_name(), "plan": plan, "session": SESSION,
            "params_file": str(params.source_file), "params": params.model_dump(mode="json"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "phases": []}
    for phase in wanted:
        template = notebook_for(phase)
        nb = nbformat.read(template, as_version=4)
        inject_parameters(nb, {"params_file": str(params.source_file), "run_dir": str(run_dir), "plan": plan},
                          header=f"# The session copy of {template.name} (aios lab): what you run and save here is "
                                 f"the record\n# of run {run_id}, in outputs/index.html.")
        out = run_dir / template.name
        nbformat.write(nb, out)
        session.notebooks.append(out)
        meta["phases"].append({"phase": phase, "notebook": out.name, "status": "not run", "seconds": 0.0,
                               "error": None, "html": None, "plan": plan})
    write_json(run_dir / "run.json", meta)
    write_index()
    return session


# ---- what a saved notebook says about its phase --------------------------------------------
def notebook_outcome(nb) -> tuple[str, str | None]:
    """(status, error) of a notebook as saved: "failed" when a cell shows an error, "ok" when every
    code cell ran, "partial" when some did, "not run" when none did."""
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    for c in code:
        err = next((o for o in c.get("outputs", []) if o.get("output_type") == "error"), None)
        if err is not None:
            where = f"cell [{c.get('execution_count')}]" if c.get("execution_count") else "a cell"
            first = (str(err.get("evalue", "")).strip().splitlines() or [""])[0]
            return "failed", f"{where} raised {err.get('ename', 'an error')}: {first}"
    ran = sum(1 for c in code if c.get("execution_count") is not None)
    if code and ran == len(code):
        return "ok", None
    return ("partial", f"{ran} of {len(code)} cells ran") if ran else ("not run", None)


def session_outcome(phases: list[dict]) -> str:
    statuses = [p.get("status") for p in phases]
    if any(s == "failed" for s in statuses):
        return "failed"
    if statuses and all(s == "ok" for s in statuses):
        return "ok"
    return "partial" if any(s in ("ok", "partial") for s in statuses) else "not run"


def is_session(run_dir: Path) -> bool:
    return read_json(Path(run_dir) / "run.json").get("session") == SESSION


@contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """run.json of a session is written by the server (on save) and by its kernels (on open_run):
    one at a time. The lock file lives outside the record."""
    key = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    with cache.lock(Path(tempfile.gettempdir()) / "synapse-lab" / f"{key}.lock"):
        yield


def _phase_entry(meta: dict, phase: str) -> dict | None:
    return next((p for p in meta.get("phases", []) if p.get("phase") == phase), None)


def note_phase_opened(run_dir: Path, phase: str, plan: bool) -> None:
    """A kernel of the session opened ``phase``: keep whether it plans or runs (the person may have
    changed ``plan`` in the parameters cell). Nothing happens outside a session."""
    run_dir = Path(run_dir)
    if not phase or not is_session(run_dir):
        return
    with _locked(run_dir):
        meta = read_json(run_dir / "run.json")
        entry = _phase_entry(meta, phase)
        if entry is not None:
            entry["plan"] = plan
            meta["plan"] = all(p.get("plan", True) for p in meta["phases"])
            write_json(run_dir / "run.json", meta)


def update(run_dir: Path, final: bool = False, saved: str | None = None) -> dict:
    """Read the session's saved notebooks into run.json (each phase's outcome) and its HTML, and
    rewrite the index. ``saved`` names the one notebook just saved (only its HTML is rendered
    again); ``final`` (the server stopped) renders all, each with its phase's findings first, and
    marks the session finished."""
    from .execute import put_findings_first, render_html
    from .index import write_index

    run_dir = Path(run_dir)
    with _locked(run_dir):
        meta = read_json(run_dir / "run.json")
        results = read_json(run_dir / "results.json")
        for entry in meta.get("phases", []):
            ipynb = run_dir / entry["notebook"]
            if not ipynb.exists():
                continue
            status, error = notebook_outcome(nbformat.read(ipynb, as_version=4))
            entry["status"], entry["error"] = status, error
            if status == "not run" or (saved and not final and entry["notebook"] != saved):
                continue
            try:
                if final:
                    put_findings_first(ipynb, results.get(entry["phase"], {}).get("findings"))
                entry["html"] = str(render_html(ipynb))
            except Exception as exc:  # a rendering problem must not lose the outcome
                entry["error"] = (error or "") + f" (HTML rendering failed: {exc})"
        meta["outcome"] = session_outcome(meta.get("phases", []))
        meta["ok"] = meta["outcome"] == "ok"
        meta["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if final:
            meta["finished"] = meta["saved"]
        write_json(run_dir / "run.json", meta)
    write_index()
    return meta


def after_save(model=None, os_path=None, contents_manager=None, **_) -> None:
    """Jupyter's post-save hook for a session server: a saved notebook of a session updates its
    record. Never raises (a failing hook would make JupyterLab report the save as failed)."""
    try:
        path = Path(os_path or "")
        if path.suffix == ".ipynb" and is_session(path.parent):
            update(path.parent, saved=path.name)
    except Exception as exc:
        log = getattr(contents_manager, "log", None)
        if log is not None:
            log.error("synapse: the session record was not updated after saving %s: %s", os_path, exc)


# ---- serving it ---------------------------------------------------------------------------
def free_port(ip: str, start: int = 8888, tries: int = 50) -> int:
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {start}-{start + tries - 1} on {ip}")


def server_argv(session: Session, ip: str, port: int, token: str, open_browser: bool = False) -> list[str]:
    """JupyterLab's options for a session: rooted in the session folder (the templates are out of
    reach), on ``ip`` only, no browser on a headless machine, root allowed when we are root."""
    argv = [f"--ServerApp.root_dir={session.run_dir}", f"--ServerApp.ip={ip}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.open_browser={open_browser}", "--ServerApp.answer_yes=True",  # Ctrl-C stops
            "--ContentsManager.post_save_hook=aios_lib.lab.after_save",
            # quiet: the banner above says what to open; no news feed to ask about (often offline)
            "--ServerApp.log_level=WARN", "--LabApp.log_level=WARN", "--LabApp.news_url=None",
            # a workspace of its own: no tabs of an earlier session reopen
            f"--LabApp.workspaces_dir={Path(tempfile.gettempdir()) / 'synapse-lab' / 'workspaces' / session.run_id}",
            f"--LabApp.default_url=/lab/tree/{session.notebooks[0].name}" if session.notebooks else ""]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--ServerApp.allow_root=True")
    return [a for a in argv if a]


def banner(session: Session, ip: str, port: int, token: str) -> str:
    first = session.notebooks[0].name if session.notebooks else ""
    url = f"http://{ip}:{port}/lab/tree/{first}?token={token}"
    host = socket.gethostname()
    tunnel = f"ssh -N -L {port}:{ip}:{port} {getpass.getuser()}@{host}"
    return "\n".join([
        f"Synapse lab session {session.run_id}: phases {' '.join(session.phases)}",
        f"  record: {session.run_dir}",
        f"  open:   {url}",
        f"  from another machine: {tunnel}   (then open the URL above there)",
        "  stop:   Ctrl-C (what you saved is the session's record in outputs/index.html)",
    ])


def serve(session: Session, ip: str = "127.0.0.1", port: int | None = None, token: str | None = None,
          open_browser: bool = False) -> dict:
    """Run JupyterLab on the session until it is stopped (Ctrl-C, SIGTERM); then close the record.

    JupyterLab runs in this process (its kernels are its own children), so the session's record
    is closed however the server stops."""
    from jupyterlab.labapp import LabApp

    port = port or free_port(ip)
    token = token or secrets.token_hex(24)
    print(banner(session, ip, port, token), flush=True)
    try:
        LabApp.launch_instance(argv=server_argv(session, ip, port, token, open_browser))
    finally:
        meta = update(session.run_dir, final=True)
    print(f"session {session.run_id}: {meta.get('outcome')} ("
          + ", ".join(f"{p['phase']} {p['status']}" for p in meta.get("phases", [])) + f"); record: {session.run_dir}",
          flush=True)
    return meta


# ---- the confirmation a person gives in the notebook ---------------------------------------
def describe_target(run) -> dict[str, str]:
    """What a destructive phase would write, as a person recognises it: model, size, by-id name."""
    from .facts.base import Fact, gather
    from .facts import disks

    t = run.params.target
    if t.kind == "disk":
        fact = Fact(name="target disk", commands={"lsblk": ("lsblk", "-J", "-b", "-o", disks.LSBLK_COLS, t.device)},
                    parse=disks.parse, optional=frozenset({"lsblk"}))  # absent here: the prompt says so
        found = (gather(run.runner, fact) or {}).get("disks") or [{}]
        d = found[0]
        size = d.get("size_bytes")
        return {"what": "disk", "by-id": t.device, "device": d.get("path") or "(not present on this machine)",
                "model": " ".join(x for x in (d.get("model"), d.get("serial")) if x) or "(unknown)",
                "size": f"{size / 1024**3:.1f} GiB" if size else "(unknown)"}
    path = Path(str(t.image))
    size = path.stat().st_size if path.exists() else None
    return {"what": "disk image", "by-id": str(path), "device": "a loop device attached to it",
            "model": "image file", "size": f"{size / 1024**3:.1f} GiB" if size else f"new, {t.image_size}"}


class ConfirmPrompt:
    """An ipywidgets prompt under the run header of a destructive phase run for real in a notebook.

    The parameter file's ``target.confirm`` stays required: this prompt adds the person's own
    confirmation, it never replaces it. Until the button is pressed the runner confirms no device,
    and a destructive step is refused with a message that points here."""

    def __init__(self, run, confirmed_by_params: frozenset[str]):
        import ipywidgets as w

        self.run, self.by_params, self.confirmed_at = run, confirmed_by_params, None
        self.target = describe_target(run)
        t = self.target
        facts = "".join(f"<tr><td><b>{k}</b></td><td><code>{v}</code></td></tr>"
                        for k, v in (("model", t["model"]), ("size", t["size"]), ("by-id", t["by-id"]),
                                     ("device now", t["device"])))
        self.button = w.Button(description=f"Erase and install onto this {t['what']}", button_style="danger",
                               icon="exclamation-triangle", layout=w.Layout(width="auto"))
        self.status = w.HTML()
        if confirmed_by_params:
            head = (f"<b>Phase {run.phase} will erase this {t['what']}</b> (target.confirm in the parameter "
                    "file names it). Press the button to confirm it here too:")
            self.button.on_click(self._confirm)
            run.runner.confirmed_devices = frozenset()
            run.runner.awaiting = (f"confirm the {t['what']} in the prompt under the run header (phase "
                                   f"{run.phase}'s first cells), then run this cell again")
        else:
            head = (f"<b>Phase {run.phase} would erase this {t['what']}</b>, but target.confirm in the parameter "
                    f"file does not repeat {t['by-id']!r}: every destructive step is refused, whatever is "
                    "pressed here.")
            self.button.disabled = True
        self.widget = w.VBox([w.HTML(f"<p>{head}</p><table>{facts}</table>"), self.button, self.status])

    def _confirm(self, _button=None) -> None:
        self.run.runner.confirmed_devices = self.by_params
        self.run.runner.awaiting = None
        self.confirmed_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.button.disabled = True
        self.status.value = f"confirmed at {self.confirmed_at}: destructive steps of this phase may run"
        self.run.record("confirmed_in_notebook", {"at": self.confirmed_at, **self.target})


def main_lab(params_file: str, phases: list[str] | None, plan: bool, ip: str, port: int | None,
             open_browser: bool, prepare_only: bool = False) -> int:
    session = prepare(params_file, phases, plan=plan)
    if prepare_only:
        print(f"prepared {session.run_dir}: " + ", ".join(p.name for p in session.notebooks))
        return 0
    meta = serve(session, ip=ip, port=port, open_browser=open_browser)
    return 0 if meta.get("outcome") in ("ok", "partial", "not run") else 1

