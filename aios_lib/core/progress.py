"""Progress for long commands: elapsed time, percent when known, and the last output line.

In JupyterLab one display line updates in place; headless (papermill) the same line goes to
the kernel's stderr, which papermill's terminal shows, at most every ``interval`` seconds.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Protocol


class ProgressSink(Protocol):
    def update(self, elapsed: float, fraction: float | None, last_line: str) -> None: ...
    def done(self, elapsed: float, rc: int | None) -> None: ...


def format_status(title: str, elapsed: float, fraction: float | None, last_line: str) -> str:
    m, s = divmod(int(elapsed), 60)
    pct = f" {fraction * 100:5.1f}%" if fraction is not None else ""
    eta = ""
    if fraction and fraction > 0.02:
        rest = elapsed / fraction - elapsed
        eta = f" (~{int(rest // 60)}m{int(rest % 60):02d}s left)"
    return f"[{m:02d}:{s:02d}]{pct}{eta} {title[:60]} | {last_line[:100]}"


class StderrSink:
    def __init__(self, title: str, interval: float = 15.0):
        self.title, self.interval, self._last = title, interval, 0.0

    def update(self, elapsed, fraction, last_line):
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(format_status(self.title, elapsed, fraction, last_line), file=sys.__stderr__, flush=True)

    def done(self, elapsed, rc):
        print(f"[done in {elapsed:.0f}s, rc={rc}] {self.title[:80]}", file=sys.__stderr__, flush=True)


class NotebookSink(StderrSink):
    """One line in the cell output, updated in place; also mirrored to stderr for papermill."""

    def __init__(self, title: str, interval: float = 15.0):
        super().__init__(title, interval)
        from IPython.display import display

        self._handle = display({"text/plain": f"running: {title[:100]}"}, raw=True, display_id=True)
        self._last_nb = 0.0

    def update(self, elapsed, fraction, last_line):
        now = time.monotonic()
        if now - self._last_nb >= 2.0:
            self._last_nb = now
            self._handle.update({"text/plain": format_status(self.title, elapsed, fraction, last_line)}, raw=True)
        super().update(elapsed, fraction, last_line)

    def done(self, elapsed, rc):
        self._handle.update({"text/plain": f"finished in {elapsed:.0f}s (rc={rc}): {self.title[:100]}"}, raw=True)
        super().done(elapsed, rc)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def make_sink(title: str) -> ProgressSink:
    return NotebookSink(title) if _in_kernel() else StderrSink(title)


# ---- parsers for build tools' progress ------------------------------------------------------
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_PCT = re.compile(r"^\[\s*(\d+)%\]")


def build_progress(line: str) -> float | None:
    """Fraction done from a ninja ``[12/345]`` or CMake-make ``[ 45%]`` line."""
    m = _NINJA.match(line)
    if m:
        done, total = int(m.group(1)), int(m.group(2))
        return done / total if total else None
    m = _MAKE_PCT.match(line)
    if m:
        return int(m.group(1)) / 100.0
    return None
