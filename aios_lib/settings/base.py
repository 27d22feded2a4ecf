"""Settings in the tuned way: a desired value, how to apply it, how to read it back.

Plan, apply and verify share one code path (:func:`apply_settings`): in plan mode the apply step
is only journaled; the read-back always runs, so the record shows requested vs in effect.
A setting targets either the live system (``root=None``) or a system root directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.runner import Runner
from ..facts import files, gather


@dataclass
class SettingResult:
    name: str
    requested: Any
    before: Any
    in_effect: Any
    applied: bool
    planned: bool
    ok: bool
    where: str = "live"
    note: str = ""
    #: rows a setting of several things shows one by one (e.g. each unit to mask): dicts with
    #: setting, requested, in effect, status
    parts: list = field(default_factory=list)


class Setting:
    """Subclasses set ``name`` and ``desired`` and implement :meth:`read` and :meth:`apply`."""

    name: str = "setting"
    desired: Any = None
    note: str = ""

    def read(self, runner: Runner, root: Path | None) -> Any:
        raise NotImplementedError

    def apply(self, runner: Runner, root: Path | None) -> None:
        raise NotImplementedError

    def matches(self, actual: Any) -> bool:
        return actual == self.desired

    def parts(self, in_effect: Any, planned: bool) -> list[dict]:
        """One row per thing this setting covers, for a setting of several (default: none)."""
        return []


def apply_settings(runner: Runner, settings: list[Setting], root: Path | None = None,
                   verify_only: bool = False) -> list[SettingResult]:
    """Read, apply where needed, read back. Returns one row per setting."""
    rows = []
    for s in settings:
        before = s.read(runner, root)
        applied = False
        if not verify_only and not s.matches(before):
            s.apply(runner, root)
            applied = True
        after = s.read(runner, root) if applied and not runner.plan else before
        planned = applied and runner.plan
        rows.append(SettingResult(s.name, s.desired, before, after, applied, planned,
                                  ok=planned or s.matches(after), where=str(root) if root else "live",
                                  note=s.note, parts=s.parts(after, planned)))
    return rows


def settings_table(rows: list[SettingResult]):
    """Requested vs in effect, for a notebook; a setting of several things shows one row each."""
    import pandas as pd

    table = []
    for r in rows:
        if r.parts:
            table += [{"setting": p["setting"], "requested": p["requested"], "before": p.get("before"),
                       "in effect": p["in effect"], "status": p["status"], "where": r.where,
                       "note": p.get("note", "")} for p in r.parts]
            continue
        table.append({"setting": r.name, "requested": r.requested, "before": r.before, "in effect": r.in_effect,
                      "status": "planned" if r.planned else ("ok" if r.ok else "MISMATCH"), "where": r.where,
                      "note": r.note})
    return pd.DataFrame(table)


class FileSetting(Setting):
    """A whole configuration file with exact content (e.g. a drop-in under /etc)."""

    def __init__(self, path: str, content: str, name: str | None = None, mode: int | None = None, note: str = ""):
        self.path, self.desired, self.mode, self.note = path, content, mode, note
        self.name = name or path

    def _host_path(self, root: Path | None) -> Path:
        return (root / self.path.lstrip("/")) if root else Path(self.path)

    def read(self, runner, root):
        return gather(runner, files.text(self._host_path(root)))

    def apply(self, runner, root):
        runner.write_file(self._host_path(root), self.desired, mode=self.mode, note=self.name)
