"""The command journal: one JSON line per command, appended as it happens.

Like archinstall's command history, the journal is the record of what a run did (or, in plan
mode, would do): time, argv, exit code, output, duration.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from .result import CommandResult

#: Output kept per stream in the journal; the head and tail survive, the middle is elided.
MAX_STREAM = 20000


def _clip(text: str) -> str:
    if len(text) <= MAX_STREAM:
        return text
    half = MAX_STREAM // 2
    return text[:half] + f"\n... [{len(text) - MAX_STREAM} characters elided] ...\n" + text[-half:]


class Journal:
    """Appends command records to ``path`` (or keeps them in memory when path is None)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.entries: list[dict] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, result: CommandResult, phase: str = "") -> dict:
        entry = asdict(result)
        entry["stdout"] = _clip(entry["stdout"])
        entry["stderr"] = _clip(entry["stderr"])
        entry["cmdline"] = result.cmdline
        entry["phase"] = phase
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(result.started))
        with self._lock:
            self.entries.append(entry)
            if self.path:
                with self.path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
        return entry


    def repair(self) -> bool:
        """End a last line that a killed process left half-written (no newline), so the next entry
        starts on a line of its own; True when one was ended. :func:`read_journal` skips it."""
        if not (self.path and self.path.exists() and self.path.stat().st_size):
            return False
        with self._lock, self.path.open("rb+") as f:
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return False
            f.write(b"\n")
            return True


def read_journal(path: str | Path) -> list[dict]:
    """The entries of a journal; a line that is not whole JSON (a process killed while writing
    it) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def iter_planned(entries: list[dict]) -> Iterator[dict]:
    return (e for e in entries if e.get("planned"))
