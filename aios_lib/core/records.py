"""Run records: a self-contained folder per run.

``outputs/<machine>/<run-id>/`` holds the executed notebooks and their HTML, ``commands.jsonl``
(the journal), ``results.json`` (what later phases and comparisons need) and ``run.json`` (what
ran, with which parameters, and how it ended). Reports read these files, never the live system.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from .paths import outputs_dir


def new_run_id(plan: bool, label: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tail = "plan" if plan else "run"
    return f"{stamp}-{tail}" + (f"-{label}" if label else "")


def run_dir_for(machine: str, run_id: str) -> Path:
    d = outputs_dir() / machine / run_id
    d.mkdir(parents=True, exist_ok=True)
    return d


#: the lock file of a run folder: held (shared) by every process that works in the folder
RUN_LOCK = ".aios-run.lock"
_FOLDER_LOCK: dict[str, Any] = {}


def hold_run_folder(run_dir: Path, claimed=None) -> None:
    """Mark this process as working in ``run_dir`` until it exits: a shared lock that the runner's
    commands inherit, so it is held until the last of them has stopped. ``aios run --resume``
    refuses a folder some process still works in. One folder per process: holding another
    releases the previous one. ``claimed``: the file :func:`claim_run_folder` returned (its
    exclusive lock becomes this shared one)."""
    from .cache import _HELD

    key = str(Path(run_dir).resolve())
    if _FOLDER_LOCK.get("dir") == key and claimed is None:
        return
    old = _FOLDER_LOCK.pop("file", None)
    _FOLDER_LOCK.pop("dir", None)
    if old is not None:
        _HELD.discard(old.fileno())
        old.close()
    try:
        f = claimed or open(Path(run_dir) / RUN_LOCK, "a")
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # a resume claims it for a moment, or the folder is read-only: nothing to hold
        return
    _FOLDER_LOCK.update(dir=key, file=f)
    _HELD.add(f.fileno())


def claim_run_folder(run_dir: Path, wait_s: float = 20.0):
    """An open file holding the exclusive lock of ``run_dir`` (None when a process still works
    in it after ``wait_s`` seconds: the run is alive, or what a kill left is still stopping).
    The caller turns it into a shared hold (``fcntl.flock(f, LOCK_SH)``) before starting phases."""
    f = open(Path(run_dir) / RUN_LOCK, "a")
    end = time.time() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.time() >= end:
                f.close()
                return None
            time.sleep(0.5)


def folder_in_use(run_dir: Path) -> bool:
    """Whether a process works in ``run_dir`` now (holds its lock); False for a record made
    before the lock existed."""
    path = Path(run_dir) / RUN_LOCK
    if not path.exists():
        return False
    try:
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a read-only copy of the records: nobody runs there
        return False
    return False


def _default(o: Any):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_default, sort_keys=False)


def write_json(path: Path, obj: Any) -> None:
    """Atomic write: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps(obj))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


class Results:
    """``results.json``: one mapping per phase, written through on every change."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict] = read_json(path) or {}

    def record(self, phase: str, key: str, value: Any) -> Any:
        self.data = read_json(self.path) or self.data  # other phases of the run may have written
        # round-trip through JSON so what is kept is exactly what a later reader gets
        self.data.setdefault(phase, {})[key] = json.loads(dumps(value))
        write_json(self.path, self.data)
        return value

    def get(self, phase: str, key: str, default: Any = None) -> Any:
        self.data = read_json(self.path) or self.data
        return self.data.get(phase, {}).get(key, default)


def find_value(obj: Any, key: str) -> Any:
    """The first non-None value of ``key`` anywhere in a nested record (dicts and lists, depth
    first): records keep evolving shapes, so a reader looks for the key, not for its path."""
    if isinstance(obj, dict):
        if key in obj and obj[key] is not None:
            return obj[key]
        for v in obj.values():
            hit = find_value(v, key)
            if hit is not None:
                return hit
    elif isinstance(obj, list):
        for v in obj:
            hit = find_value(v, key)
            if hit is not None:
                return hit
    return None
