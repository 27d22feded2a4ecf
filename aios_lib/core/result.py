"""What a command left behind: :class:`CommandResult`, and the two ways the runner says no.

Its own module so that the journal (which records results) and the runner (which makes them)
do not import each other.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass
class CommandResult:
    argv: list[str]
    kind: str
    rc: int | None
    stdout: str
    stderr: str
    started: float
    duration: float
    planned: bool = False
    timed_out: bool = False
    cwd: str | None = None
    root: str | None = None
    device: str | None = None
    note: str | None = None

    @property
    def cmdline(self) -> str:
        return shlex.join(self.argv)

    @property
    def ok(self) -> bool:
        return self.planned or self.rc == 0

    def _repr_markdown_(self) -> str:  # how a result shows itself in a notebook cell
        if self.planned:
            return f"**planned, not run** (`{self.kind}`)\n\n```\n$ {self.cmdline}\n```"
        out = (self.stdout or "").rstrip()
        lines = out.splitlines()
        if len(lines) > 40:
            out = "\n".join(lines[:20] + [f"... ({len(lines) - 40} lines) ..."] + lines[-20:])
        return f"`$ {self.cmdline}` → rc={self.rc} in {self.duration:.1f}s\n\n```\n{out}\n```"


class CommandFailed(RuntimeError):
    """A command exited non-zero (or timed out). Names the command, the code and stderr's tail."""

    def __init__(self, result: CommandResult):
        self.result = result
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-12:]
        what = "timed out" if result.timed_out else f"exited {result.rc}"
        msg = f"command {what}: {result.cmdline}"
        if tail:
            msg += "\n  stderr (last lines):\n    " + "\n    ".join(tail)
        super().__init__(msg)


class DestructiveRefused(PermissionError):
    """A destructive command was asked for without a matching confirmation; nothing ran."""
