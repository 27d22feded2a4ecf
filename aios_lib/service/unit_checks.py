"""Checks of generated units before they are installed: ``systemd-analyze verify`` and
``security --offline=true`` against a staging root (this host's units plus the generated ones),
and every ``ExecStart=`` option checked against the program's own ``--help``.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..facts import gather, llama as llama_facts, systemd
from ..facts.systemd import SecurityResult, VerifyResult
from .units import Unit


def staging_root(run, units: list[Unit], executables: dict[str, Path | None], where: Path | None = None) -> Path:
    """A system tree for ``--root=``: this host's systemd units, the units under /etc, and the
    executables they start (copied from ``executables``: unit exec path -> file on this host;
    None puts a placeholder script there, for a program that is not bundled, e.g. ollama)."""
    r = run.runner
    root = Path(where or (Path(run.dir) / "unit-root"))
    # a tree in the run folder: it changes only the record, so it is work (planned in plan mode)
    r.work(["mkdir", "-p", str(root / "usr/lib/systemd"), str(root / "usr/bin")], quiet=True)
    if not (root / "usr/lib/systemd/system").exists():
        r.work(["cp", "-a", "/usr/lib/systemd/system", str(root / "usr/lib/systemd/")], quiet=True,
               note="this host's units, for systemd-analyze --root")
    for link, to in (("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")):
        if not (root / link).is_symlink():
            r.work(["ln", "-s", to, str(root / link)], quiet=True)
    if not (root / "usr/bin/sha256sum").exists():
        r.work(["cp", "/usr/bin/sha256sum", str(root / "usr/bin/sha256sum")], quiet=True)
    for u in units:
        r.write_file(root / "etc/systemd/system" / u.name, u.text, note="generated unit, to check")
    for exe, src in executables.items():
        dest = root / exe.lstrip("/")
        if src is None or not Path(src).exists():
            r.write_file(dest, "#!/bin/sh\n# placeholder: this program is not bundled (or not built yet)\nexit 1\n",
                         mode=0o755, note="placeholder for a program that is not here")
        else:
            r.work(["mkdir", "-p", str(dest.parent)], quiet=True)
            r.work(["cp", "-L", str(src), str(dest)], quiet=True)
    return root


def verify(run, unit: str, root: Path) -> VerifyResult:
    """``systemd-analyze verify --root=ROOT UNIT``; planned-safe (it only reads, so it runs in
    plan mode too when the tree exists)."""
    if not Path(root).exists():
        return VerifyResult(unit, False, None, [], str(root), planned=True)
    return gather(run.runner, systemd.verify(root, unit))


def security(run, unit: str, root: Path) -> SecurityResult:
    """``systemd-analyze security --offline=true --root=ROOT UNIT``: the exposure score."""
    if not Path(root).exists():
        return SecurityResult(unit, None, None, [], planned=True)
    return gather(run.runner, systemd.security(root, unit))


def exec_flags(unit_text: str) -> list[str]:
    """The options on the unit's ExecStart= line."""
    for ln in unit_text.splitlines():
        if ln.startswith("ExecStart="):
            return [w for w in shlex.split(ln[len("ExecStart="):])[1:] if re.match(r"^-{1,2}[A-Za-z]", w)]
    return []


def check_arguments(run, unit: Unit, program: Path | None) -> list[str] | None:
    """Options of ExecStart= that the program's ``--help`` does not know (systemd cannot see
    them: a wrong flag only shows as a service that exits at once and restarts forever).
    None when the program is not here to ask."""
    if program is None or not Path(program).exists():
        return None
    known = gather(run.runner, llama_facts.help_flags(program))
    if not known:
        return None
    return [f for f in exec_flags(unit.text) if f not in known]


@dataclass
class UnitCheck:
    unit: Unit
    verify: VerifyResult
    security: SecurityResult
    unknown_args: list[str] | None = None

    def row(self) -> dict:
        return {"unit": self.unit.name, "verify": "planned" if self.verify.planned else
                ("passes" if self.verify.ok else "FAILS"),
                "exposure": self.security.exposure, "level": self.security.level,
                "OK or better": self.security.ok_or_better,
                "options known to the program": "not checked" if self.unknown_args is None else
                ("all" if not self.unknown_args else "UNKNOWN: " + " ".join(self.unknown_args))}


def check_units(run, units: list[Unit], executables: dict[str, Path | None], root: Path | None = None,
                record: str | None = "units") -> Any:
    """Verify and score ``units`` in ``root`` (an image tree) or a fresh staging tree; a table."""
    import pandas as pd

    tree = root or staging_root(run, units, executables)
    checks = []
    for u in units:
        program = executables.get(u.exec_path)
        if program is None and root is not None:
            program = Path(root) / u.exec_path.lstrip("/")
        checks.append(UnitCheck(u, verify(run, u.name, tree), security(run, u.name, tree),
                                check_arguments(run, u, program)))
    if record:
        run.record(record, [{**c.row(), "problems": c.verify.problems, "unknown_args": c.unknown_args,
                             "meta": c.unit.meta,
                             "text": c.unit.text} for c in checks])
    df = pd.DataFrame([c.row() for c in checks])
    df.attrs["checks"] = checks
    return df

#: the blueprint's section 4.1 example, verbatim (the trailing comments make two lines invalid)
BLUEPRINT_OLLAMA = """[Unit]
Description=Ollama Service (High Priority)
After=network.target

[Service]
ExecStart=/usr/bin/ollama serve
User=ai-user
Group=ai-user
Restart=always
# Optimization priorities
CPUSchedulingPolicy=batch
Nice=-5
MemoryHigh=28G  # Leave 4GB for OS
OOMScoreAdjust=-500 # Don't kill this

[Install]
WantedBy=default.target
"""


def blueprint_example(run) -> VerifyResult:
    """``systemd-analyze verify`` on the blueprint's unit as written (in a staging tree)."""
    unit = Unit("ollama.service", BLUEPRINT_OLLAMA, "/usr/bin/ollama")
    root = staging_root(run, [unit], {"/usr/bin/ollama": None}, where=Path(run.dir) / "blueprint-unit-root")
    return verify(run, "ollama.service", root)
