"""systemd's own verdicts on unit files: ``systemd-analyze verify`` (problems it logs),
``systemd-analyze security --offline=true`` (the exposure score), and the running services
(``systemctl list-units``, as a booted image prints them).

The two ``systemd-analyze`` reads run against a root directory (``--root=``), so they check a
staging tree or an image's tree, never this host's units.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .base import Fact

#: systemd-analyze security's levels, best first, with the exposure each reaches up to
#: (src/analyze/analyze-security.c: badness_table)
LEVELS = [("PERFECT", 0.0), ("SAFE", 0.9), ("OK", 4.9), ("MEDIUM", 7.4), ("EXPOSED", 8.9),
          ("UNSAFE", 9.9), ("DANGEROUS", 10.0)]

LEVEL_RANK = {name: i for i, (name, _) in enumerate(LEVELS)}


@dataclass
class VerifyResult:
    unit: str
    ok: bool
    rc: int | None
    problems: list[str]
    root: str
    planned: bool = False

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"`systemd-analyze verify {self.unit}`: planned"
        state = "passes" if self.ok else "**FAILS**"
        body = "\n".join(self.problems) or "(no warnings)"
        return f"`systemd-analyze verify --root={self.root} {self.unit}` {state} (rc={self.rc})\n\n```\n{body}\n```"


def parse_verify(unit: str, rc: int | None, stderr: str) -> VerifyResult:
    """systemd-analyze verify exits 0 on some bad lines (it logs "ignoring" and goes on), so a
    warning that names the unit counts as a failure too."""
    base = unit.rsplit("/", 1)[-1]
    problems = [ln.strip() for ln in (stderr or "").splitlines()
                if ln.strip() and (base in ln or "Unknown" in ln or "Invalid" in ln or "ignoring" in ln)]
    return VerifyResult(base, rc == 0 and not problems, rc, problems, "")


@dataclass
class SecurityResult:
    unit: str
    exposure: float | None
    level: str | None
    rows: list[dict]
    planned: bool = False

    @property
    def ok_or_better(self) -> bool:
        return self.level is not None and LEVEL_RANK[self.level] <= LEVEL_RANK["OK"]

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["set", "setting", "exposure", "description"])

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"`systemd-analyze security {self.unit}`: planned"
        open_rows = [r for r in self.rows if not r["set"] and r["exposure"]]
        lines = "\n".join(f"| {r['setting']} | {r['exposure']} | {r['description']} |" for r in open_rows)
        return (f"**{self.unit}: exposure {self.exposure} {self.level}** "
                f"({'OK or better' if self.ok_or_better else 'worse than OK'})\n\n"
                f"Remaining exposure:\n\n| setting | exposure | why |\n|---|---|---|\n{lines}")


_OVERALL = re.compile(r"Overall exposure level for (\S+):\s*([0-9.]+)\s+([A-Z]+)")

_ROW = re.compile(r"^([✓✗+-])\s+(\S+)\s+(.*?)(?:\s{2,}([0-9.]+))?\s*$")


def parse_security(text: str) -> SecurityResult:
    """Parse ``systemd-analyze security`` text output (252)."""
    m = _OVERALL.search(text or "")
    rows = []
    for ln in (text or "").splitlines():
        r = _ROW.match(ln.rstrip())
        if r:
            rows.append({"set": r.group(1) in "✓+", "setting": r.group(2), "description": r.group(3).strip(),
                         "exposure": float(r.group(4)) if r.group(4) else None})
    if not m:
        return SecurityResult("?", None, None, rows)
    return SecurityResult(m.group(1), float(m.group(2)), m.group(3), rows)



def _verify(unit: str, root: str, o: Mapping[str, str]) -> VerifyResult:
    v = parse_verify(unit, o.get("verify.rc"), o.get("verify.stderr") or "")
    v.root = root
    return v


def verify(root: str | Path, unit: str) -> Fact:
    """``systemd-analyze verify --root=ROOT UNIT``: its exit status and what it logs on stderr."""
    return Fact(name=f"systemd-analyze verify {unit}",
                commands={"verify": ("systemd-analyze", "verify", f"--root={root}", unit)},
                parse=lambda o: _verify(unit, str(root), o), status=frozenset({"verify"}))


def security(root: str | Path, unit: str) -> Fact:
    """``systemd-analyze security --offline=true --root=ROOT UNIT``: the exposure table (read
    whatever the exit status: a threshold would make it non-zero)."""
    return Fact(name=f"systemd-analyze security {unit}",
                commands={"security": ("systemd-analyze", "security", "--offline=true", f"--root={root}",
                                       "--no-pager", unit)},
                parse=lambda o: parse_security(o.get("security") or ""), status=frozenset({"security"}))


# ---- running services ---------------------------------------------------------------------------
def parse_running(text: str) -> list[str]:
    """Unit names from ``systemctl list-units --type=service --state=running --no-legend --plain``."""
    units = []
    for ln in (text or "").splitlines():
        parts = ln.replace("●", " ").split()
        if parts and "." in parts[0]:
            units.append(parts[0])
    return units


# ---- units of the running system ------------------------------------------------------------------
def parse_unit_known(stderr: str | None, rc: int | None) -> bool:
    """``systemctl cat UNIT``: the unit exists (a masked one counts: systemctl says so on stderr)."""
    return rc == 0 or "masked" in (stderr or "")


def unit_known(unit: str) -> Fact:
    """Whether the running system has ``unit`` (``systemctl cat``)."""
    return Fact(name=f"systemctl cat {unit}", commands={"cat": ("systemctl", "cat", unit)},
                parse=lambda o: parse_unit_known(o.get("cat.stderr"), o.get("cat.rc")), status=frozenset({"cat"}))


def unit_state(unit: str) -> Fact:
    """``systemctl is-enabled UNIT``: ``enabled``, ``disabled``, ``masked``, ... ("" when it says nothing)."""
    return Fact(name=f"systemctl is-enabled {unit}", commands={"state": ("systemctl", "is-enabled", unit)},
                parse=lambda o: (o.get("state") or "").strip(), status=frozenset({"state"}))


#: ``systemctl get-default``: the default target (None when systemctl says nothing)
DEFAULT_TARGET = Fact(name="systemctl get-default", commands={"target": ("systemctl", "get-default")},
                      parse=lambda o: (o.get("target") or "").strip() or None, status=frozenset({"target"}))
