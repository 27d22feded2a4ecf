"""Progress for long commands: elapsed time, percent when known, and the last output line.

Where it shows depends on who watches (:func:`make_sink`):

* a notebook open in JupyterLab: one tqdm widget per command (ipywidgets), updated in place and
  replaced by a single plain line when the command ends, so the saved notebook and its HTML keep
  one readable line instead of a widget nobody can render;
* a headless notebook (``aios run``/``aios plan`` set ``AIOS_HEADLESS=1`` for papermill's kernels):
  plain lines on stdout at most every ``interval`` seconds; papermill echoes each once and the
  executed notebook keeps them as ordinary output (never a red stderr block);
* plain Python (the CLI, tests): the same lines on stderr.

The runner asks for progress only after a command has been silent for a few seconds, so quick
commands show nothing at all.
"""
from __future__ import annotations

import os
import re
import sys
import time
from typing import Protocol, TextIO

#: set in the environment of kernels that nobody watches (papermill under ``aios run``)
HEADLESS_ENV = "AIOS_HEADLESS"


class ProgressSink(Protocol):
    def update(self, elapsed: float, fraction: float | None, last_line: str) -> None: ...
    def done(self, elapsed: float, rc: int | None) -> None: ...


def _clock(elapsed: float) -> str:
    m, s = divmod(int(elapsed), 60)
    return f"{m:02d}:{s:02d}"


def format_status(title: str, elapsed: float, fraction: float | None, last_line: str) -> str:
    pct = f" {fraction * 100:5.1f}%" if fraction is not None else ""
    eta = ""
    if fraction and fraction > 0.02:
        rest = elapsed / fraction - elapsed
        eta = f" (~{int(rest // 60)}m{int(rest % 60):02d}s left)"
    return f"[{_clock(elapsed)}]{pct}{eta} {title[:60]} | {last_line[:100]}"


def format_done(title: str, elapsed: float, rc: int | None) -> str:
    return f"[done in {elapsed:.0f}s, rc={rc}] {title[:100]}"


class LineSink:
    """Plain status lines, at most one per ``interval`` seconds, each printed once to ``stream``."""

    def __init__(self, title: str, interval: float = 15.0, stream: TextIO | None = None):
        self.title, self.interval, self.stream = title, interval, stream
        self._last: float | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def update(self, elapsed, fraction, last_line):
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            self._print(format_status(self.title, elapsed, fraction, last_line))

    def done(self, elapsed, rc):
        self._print(format_done(self.title, elapsed, rc))


class WidgetSink:
    """One tqdm progress widget (ipywidgets) per command in a notebook, created on the first update.

    The widget shows the elapsed time, the percent when the command's output tells it (a
    progress parser), and the last output line. When the command ends the widget's output is
    replaced by one plain line, ``[done in 42s, rc=0] cmake --build ...``.
    """

    def __init__(self, title: str, desc_width: int = 48):
        self.title = title
        self.desc = title if len(title) <= desc_width else title[:desc_width - 1] + "…"
        self._bar = None
        self._handle = None
        self._known = False

    def _open(self, elapsed: float, fraction: float | None) -> None:
        from IPython.display import display
        from tqdm.notebook import tqdm

        self._known = fraction is not None
        fmt = ("{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}" if self._known
               else "{desc} |{bar}| [{elapsed}]{postfix}")
        self._bar = tqdm(total=100 if self._known else None, desc=self.desc, bar_format=fmt, leave=True,
                         display=False, dynamic_ncols=True, mininterval=0)
        self._bar.start_t = self._bar._time() - elapsed  # the command started before the widget
        self._handle = display(self._bar.container, display_id=True)

    def update(self, elapsed, fraction, last_line):
        if self._bar is None:
            self._open(elapsed, fraction)
        bar = self._bar
        if fraction is not None and not self._known:
            self._known = True
            bar.bar_format = "{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}"
            start = bar.start_t
            bar.reset(total=100)
            bar.start_t = start
        if fraction is not None:
            bar.n = round(min(max(fraction, 0.0), 1.0) * 100, 1)
        bar.set_postfix_str(last_line[:100], refresh=False)
        bar.refresh()

    def done(self, elapsed, rc):
        line = format_done(self.title, elapsed, rc)
        if self._bar is None:
            print(line, flush=True)
            return
        self._bar.disable = True  # closing would restyle the widget we are about to replace
        self._handle.update({"text/plain": line}, raw=True)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def headless() -> bool:
    """True in a kernel nobody watches (papermill under ``aios run``/``aios plan``)."""
    return os.environ.get(HEADLESS_ENV, "") not in ("", "0")


def interactive() -> bool:
    """True in a notebook kernel that a person drives (JupyterLab), not a headless one."""
    return _in_kernel() and not headless()


def _widgets_available() -> bool:
    from importlib.util import find_spec

    try:
        return find_spec("ipywidgets") is not None and find_spec("tqdm.notebook") is not None
    except ImportError:  # tqdm itself missing
        return False


def make_sink(title: str) -> ProgressSink:
    if _in_kernel():
        if not headless() and _widgets_available():
            return WidgetSink(title)
        return LineSink(title, stream=sys.stdout)
    return LineSink(title)


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
