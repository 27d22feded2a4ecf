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
from .units import Unit


#: systemd-analyze security's levels, best first, with the exposure each reaches up to
#: (src/analyze/analyze-security.c: badness_table)
LEVELS = [("PERFECT", 0.0), ("SAFE", 0.9), ("OK", 4.9), ("MEDIUM", 7.4), ("EXPOSED", 8.9),
          ("UNSAFE", 9.9), ("DANGEROUS", 10.0)]

LEVEL_RANK = {name: i for i, (name, _) in enumerate(LEVELS)}

# ---- systemd's own checks ---------------------------------------------------------------------------
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
    res = run.runner.probe(["systemd-analyze", "verify", f"--root={root}", unit], check=False, quiet=True)
    v = parse_verify(unit, res.rc, res.stderr)
    v.root = str(root)
    return v


def security(run, unit: str, root: Path) -> SecurityResult:
    """``systemd-analyze security --offline=true --root=ROOT UNIT``: the exposure score."""
    if not Path(root).exists():
        return SecurityResult(unit, None, None, [], planned=True)
    res = run.runner.probe(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
                           check=False, quiet=True)
    return parse_security(res.stdout)

_HELP_FLAG = re.compile(r"^\s{0,2}(-{1,2}[A-Za-z0-9][\w-]*(?:,\s*-{1,2}[A-Za-z0-9][\w-]*)*)")


def parse_help_flags(text: str) -> set[str]:
    """The options a program's ``--help`` lists (``-t,    --threads N`` -> {-t, --threads})."""
    flags: set[str] = set()
    for ln in (text or "").splitlines():
        m = _HELP_FLAG.match(ln)
        if m:
            flags.update(f.strip() for f in m.group(1).split(","))
    return flags


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
    env = {"LD_LIBRARY_PATH": str(Path(program).resolve().parent)}
    res = run.runner.probe([str(program), "--help"], env=env, check=False, quiet=True, timeout=60)
    known = parse_help_flags((res.stdout or "") + (res.stderr or ""))
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
