"""Interrupted runs: where a run stopped, what it left behind, and how ``aios run --resume`` goes on.

A run folder's ``run.json`` lists the phases asked for (``requested``) and, for each phase started,
its status: ``running`` from the moment it starts, then ``ok``, ``failed`` or ``missing``. A run
killed in the middle of a phase leaves that phase ``running`` and no ``finished`` time. Papermill
cannot restart a notebook from a failed cell, but a phase can be run again: its steps find what is
done (cache entries with their marker, an image whose manifest says complete) and what a kill left
half-done, and clean or complete it.

* :func:`resume_point` (pure): the phases finished earlier and those still to run, from the first
  unfinished one on.
* :func:`param_differences` (pure): what changed in the parameters since the run started (a resume
  with other parameters would mix two configurations in one record, so it is refused).
* :func:`plan_resume`: the above for a run folder, or :class:`ResumeRefused` saying why not.
* :func:`recover`: before any phase runs (a resumed run, and every new one), put back what a killed
  run left: live host settings from their ledger, mounts and loop devices of the target, a
  half-written last line of the journal; report what the cache holds half-done (each builder
  cleans or continues its own on use). Every action is a journaled command or note.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import cache
from .core.records import read_json
from .params import ParamsError

#: statuses of a phase that a resume does not run again
FINISHED = ("ok",)


class ResumeRefused(ParamsError):
    """The run folder cannot be resumed (not a run, a plan, other parameters, still running). One line."""

    def __init__(self, message: str):
        super().__init__([message])


# ---- pure state detection ----------------------------------------------------------------------------
def requested_phases(meta: dict) -> list[str]:
    """The phases the run was asked for: ``requested`` in run.json; records made before it existed
    name their parameters' ``phases`` (and the phases they recorded, in case a phase was named on
    the command line)."""
    if meta.get("requested"):
        return list(meta["requested"])
    seen = [p.get("phase") for p in meta.get("phases") or [] if p.get("phase")]
    listed = list((meta.get("params") or {}).get("phases") or [])
    return list(dict.fromkeys(seen + [p for p in listed if not seen or p > seen[-1]]))


def resume_point(requested: list[str], recorded: list[dict]) -> tuple[list[str], list[str]]:
    """(finished, to run): the phases before the first one whose recorded status is not ``ok``
    (failed, interrupted while ``running``, never started), and that phase with all after it."""
    status = {}
    for p in recorded or []:
        status[p.get("phase")] = p.get("status")
    for i, phase in enumerate(requested):
        if status.get(phase) not in FINISHED:
            return list(requested[:i]), list(requested[i:])
    return list(requested), []


def param_differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two parameter dumps (``params`` in run.json and the
    file as it reads now); ``source_file`` is where it was read from, not a parameter."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(recorded) | set(current), key=str):
            if k == "source_file" and not prefix:
                continue
            out += param_differences(recorded.get(k, "<absent>"), current.get(k, "<absent>"),
                                     f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if recorded == current else [prefix or "(all)"]


def interrupted(meta: dict) -> bool:
    """The run stopped without writing its end (killed, or the machine went down)."""
    return "finished" not in meta or any(p.get("status") == "running" for p in meta.get("phases") or [])


# ---- a run folder --------------------------------------------------------------------------------------
@dataclass
class ResumePlan:
    run_dir: Path
    meta: dict
    requested: list[str]
    done: list[str]
    todo: list[str]
    attempt: int  # this resume's number (1 for the first)
    how_it_ended: str
    params_file: str
    differences: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        kept = ", ".join(self.done) or "none"
        return [f"{self.run_dir}: {self.how_it_ended}",
                f"  phases finished and kept: {kept}",
                f"  phases to run again: {', '.join(self.todo) or 'none'}"
                + (f" (from {self.todo[0]}, the first unfinished)" if self.todo else "")]


def how_it_ended(meta: dict) -> str:
    if interrupted(meta):
        running = [p["phase"] for p in meta.get("phases") or [] if p.get("status") == "running"]
        return ("interrupted during phase " + running[-1]) if running else "interrupted (no end recorded)"
    failed = [p["phase"] for p in meta.get("phases") or [] if p.get("status") not in FINISHED]
    return f"phase {failed[0]} failed" if failed else "finished: every phase ok"


def plan_resume(run_dir: str | os.PathLike, current_params: dict | None = None) -> ResumePlan:
    """What ``aios run --resume run_dir`` would do; :class:`ResumeRefused` when it cannot.

    ``current_params``: the parameter file as it reads now (a dump); any difference from the
    recorded parameters refuses the resume."""
    d = Path(run_dir)
    meta = read_json(d / "run.json")
    if not meta:
        raise ResumeRefused(f"{d}: no run.json here; name a run folder, outputs/<machine>/<run-id>")
    if meta.get("plan"):
        raise ResumeRefused(f"{d}: a plan-mode record (it changed nothing); start a new `aios plan` or `aios run`")
    requested = requested_phases(meta)
    done, todo = resume_point(requested, meta.get("phases") or [])
    if not todo:
        raise ResumeRefused(f"{d}: finished, every phase ok ({', '.join(done) or 'none asked for'}): nothing to "
                            "resume; start a new `aios run` to run it again")
    diffs = param_differences(meta.get("params") or {}, current_params) if current_params is not None else []
    if diffs:
        shown = ", ".join(diffs[:6]) + (f" and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ResumeRefused(f"{meta.get('params_file')}: changed since run {meta.get('run_id', d.name)} started "
                            f"({shown}); a resume must use the parameters the run started with: put them back, "
                            "or start a new run")
    return ResumePlan(d, meta, requested, done, todo, len(meta.get("resumes") or []) + 1, how_it_ended(meta),
                      meta.get("params_file") or "", diffs)


def recorded_params(run_dir: str | os.PathLike, meta: dict):
    """The parameters the run started with, read from the file run.json names (a resume reads the
    file again and compares it with the recorded dump: :func:`plan_resume`)."""
    from .params import load_params

    name = meta.get("params_file")
    if not name:
        raise ResumeRefused(f"{run_dir}: run.json names no parameter file; start a new run")
    try:
        return load_params(name)
    except ParamsError as e:
        raise ResumeRefused(f"{run_dir}: the parameter file the run started with cannot be read ({e.problems[0]}); "
                            "put it back as it was, or start a new run") from None


# ---- what a killed run left on this machine ------------------------------------------------------------
def recover(run, ledger: Path | None = None, scan_cache: bool = True) -> list[str]:
    """Put back what a killed run left before any phase starts; returns what was found and done
    (one line each), every action journaled through ``run.runner`` (planned in plan mode).

    1. the journal's last line, if a kill cut it (the next entry starts on a line of its own);
    2. live host settings a measurement changed and could not restore (their ledger);
    3. mounts under the target's mount folder and loop devices of its image;
    4. the build cache: entries without their completion marker, partial files, build trees of
       unfinished builds; reported here, cleaned or continued by their builder on the next use.
    """
    from .settings import live
    from .system import disk, target

    r = run.runner
    out: list[str] = []
    if not r.plan and r.journal.repair():
        out.append("the journal's last line was cut by a kill: ended, and skipped by readers")
    ledger = Path(ledger or live.LEDGER)
    if ledger.exists():
        if r.plan:
            holder = live.ledger_holder(ledger)
            out.append(f"live host settings: a measurement that is still running (pid {holder}) holds them "
                       f"({ledger}); left alone" if holder else
                       f"live host settings of a killed measurement ({ledger}): a real run restores them first")
        else:
            try:
                changes = live.LiveState(run, ledger=ledger).restore_leftovers()
                out.append(f"live host settings a killed measurement left ({ledger}) restored: "
                           + (", ".join(f"{c.setting} {c.before} -> {c.after}" for c in changes) or "already as found"))
            except RuntimeError as e:  # another measurement is running now: its settings are its own
                out.append(str(e))
    t = run.params.target
    if t.kind in ("image", "disk"):
        spec = target.open_target(run)
        released = disk.release_stale(r, str(spec.image) if spec.image else None, spec.mount_dir)
        if released:
            out.append(f"the target {spec.what}: {', '.join(released)} (left by an interrupted run)"
                       + ("; planned: a real run does it" if r.plan else ""))
    if scan_cache:
        for lo in cache.leftovers():
            out.append(f"cache: {lo.line()}")
    for line in out:
        r.note(line)
    return out


def preview(run_dir: str | os.PathLike) -> list[str]:
    """What ``aios run --resume run_dir`` would do, found without changing anything: the phases it
    keeps and runs again, and the leftovers it would put back first (``aios plan --resume``)."""
    from .context import Run
    from .core.journal import Journal
    from .core.records import Results
    from .core.runner import Runner

    d = Path(run_dir)
    meta = read_json(d / "run.json")
    plan_resume(d)  # refuses what is not a resumable run before its parameters are read
    params = recorded_params(d, meta)
    rp = plan_resume(d, params.model_dump(mode="json"))
    # a journal in memory: the run's own record is not touched
    run = Run(params=params, runner=Runner(journal=Journal(None), plan=True, phase="resume"), dir=d,
              phase="resume", results=Results(d / "results.json"))
    found = recover(run)
    return rp.lines() + ["  first, leftovers of the interruption:" if found else
                         "  no leftovers of the interruption found"] + [f"    - {f}" for f in found]
