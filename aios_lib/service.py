"""Phase 6: the inference service as a systemd unit, checked by systemd itself.

* :func:`placement` decides threads and CPUs (phase 05's choice, else phase 01's physical cores,
  else the parameters) and :func:`memory_high` computes ``MemoryHigh`` from the machine's RAM minus
  the stated reserve.
* :func:`llama_unit` / :func:`ollama_unit` render unit files from the parameters. Values never carry
  trailing comments: systemd has no inline comments, so the blueprint's ``MemoryHigh=28G  # ...``
  is an invalid value that systemd ignores (with a warning) and the limit silently disappears.
* :func:`verify` runs ``systemd-analyze verify`` and :func:`security` runs
  ``systemd-analyze security --offline=true`` through the runner, both with ``--root=`` pointing
  at a system tree: the image's root, or (before an image exists) a staging tree holding the
  unit, the executables it starts and this host's systemd units. systemd 252 has ``--offline``;
  without ``--root`` it also works on a unit file path, but ``verify`` then checks ExecStart= on
  this host, where /opt/synapse/... does not exist.
* :func:`gate_model` is the untrusted-model gate: sha256 pinned and the GGUF structure checked
  before a model may be installed for the service; the unit re-checks the hash on every start.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: systemd-analyze security's levels, best first, with the exposure each reaches up to
#: (src/analyze/analyze-security.c: badness_table)
LEVELS = [("PERFECT", 0.0), ("SAFE", 0.9), ("OK", 4.9), ("MEDIUM", 7.4), ("EXPOSED", 8.9),
          ("UNSAFE", 9.9), ("DANGEROUS", 10.0)]
LEVEL_RANK = {name: i for i, (name, _) in enumerate(LEVELS)}

SANDBOX = [
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("PrivateUsers", "yes"),
    ("PrivateMounts", "yes"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("IPAddressDeny", "any"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallFilter", "~@privileged @resources"),
    # a filtered call fails with EPERM instead of killing the server outright
    ("SystemCallErrorNumber", "EPERM"),
    ("SystemCallArchitectures", "native"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RemoveIPC", "yes"),
    ("KeyringMode", "private"),
    ("DevicePolicy", "closed"),
    ("UMask", "0077"),
]


class ServiceError(ValueError):
    """The parameters ask for a service that cannot be made (e.g. no RAM left after the reserve)."""


# ---- where the numbers come from ----------------------------------------------------------------
def _find(obj: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested dict/list (records have evolving shapes)."""
    if isinstance(obj, dict):
        if key in obj and obj[key] is not None:
            return obj[key]
        for v in obj.values():
            hit = _find(v, key)
            if hit is not None:
                return hit
    elif isinstance(obj, list):
        for v in obj:
            hit = _find(v, key)
            if hit is not None:
                return hit
    return None


@dataclass
class Placement:
    threads: int
    cpus: list[int]
    source: str

    def _repr_markdown_(self) -> str:
        return f"`-t {self.threads}`, `CPUAffinity={' '.join(map(str, self.cpus))}` (from {self.source})"


def placement(run) -> Placement:
    """Threads and CPUs for the service: parameters, else phase 05's choice, else phase 01."""
    sp = run.params.service
    if sp.threads != "auto" and sp.cpus != "auto":
        return Placement(int(sp.threads), list(sp.cpus), "parameters (service.threads, service.cpus)")
    chosen = run.recorded("05", "chosen") or {}
    if chosen.get("threads"):
        threads = int(sp.threads) if sp.threads != "auto" else int(chosen["threads"])
        cpus = list(sp.cpus) if sp.cpus != "auto" else list(chosen.get("cpus") or range(threads))
        return Placement(threads, cpus, "phase 05 benchmark (results.json 05/chosen)")
    cores = _find(run.recorded("01", "survey") or {}, "physical_cores")
    if cores:
        threads = int(sp.threads) if sp.threads != "auto" else int(cores)
        cpus = list(sp.cpus) if sp.cpus != "auto" else list(range(threads))
        return Placement(threads, cpus, "phase 01 survey: physical cores (no phase 05 choice recorded)")
    import os

    n = int(sp.threads) if sp.threads != "auto" else (len(sp.cpus) if sp.cpus != "auto" else (os.cpu_count() or 1))
    cpus = list(sp.cpus) if sp.cpus != "auto" else list(range(n))
    return Placement(n, cpus, "parameters / this host's CPU count (no phase 05 or 01 record)")


@dataclass
class MemoryBudget:
    ram_bytes: int
    reserve_bytes: int
    high_bytes: int
    source: str

    @property
    def directive(self) -> str:
        return f"{self.high_bytes // 2**20}M"

    def _repr_markdown_(self) -> str:
        g = 2**30
        return (f"MemoryHigh = RAM {self.ram_bytes / g:.2f} GiB − reserve {self.reserve_bytes / g:.2f} GiB "
                f"= **{self.directive}** (RAM from {self.source})")


def memory_high(run, ram_bytes: int | None = None) -> MemoryBudget:
    """MemoryHigh = RAM - reserve, rounded down to MiB. RAM: parameters, phase 01, this host."""
    sp = run.params.service
    if ram_bytes is not None:
        source = "caller"
    elif sp.ram_gib != "auto":
        ram_bytes, source = int(float(sp.ram_gib) * 2**30), "parameters (service.ram_gib)"
    else:
        total = _find((run.recorded("01", "survey") or {}).get("memory", {}), "total_bytes") \
            or _find(run.recorded("01", "survey") or {}, "total_bytes")
        if total:
            ram_bytes, source = int(total), "phase 01 survey (memory total)"
        else:
            r = run.runner.probe(["cat", "/proc/meminfo"], quiet=True)
            m = re.search(r"^MemTotal:\s+(\d+) kB", r.stdout or "", re.M)
            ram_bytes, source = int(m.group(1)) * 1024, "this host's /proc/meminfo (no phase 01 record)"
    reserve = int(sp.memory_reserve_gib * 2**30)
    high = (ram_bytes - reserve) // 2**20 * 2**20
    if high < 256 * 2**20:
        raise ServiceError(f"MemoryHigh would be {high / 2**30:.2f} GiB: RAM {ram_bytes / 2**30:.2f} GiB minus "
                           f"service.memory_reserve_gib {sp.memory_reserve_gib} leaves too little; lower the reserve")
    return MemoryBudget(ram_bytes, reserve, high, source)


# ---- unit files -----------------------------------------------------------------------------------
@dataclass
class Unit:
    name: str
    text: str
    exec_path: str
    #: what the unit needs on the system it runs on (for the staging tree and the record)
    meta: dict = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        return f"`/etc/systemd/system/{self.name}`\n\n```ini\n{self.text}```"


_TRAILING_COMMENT = re.compile(r"\s[#;]")


def render(sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """INI text with one ``Key=value`` per line. A value with ``#`` or a newline is refused:
    systemd has no trailing comments, the text would become part of the value."""
    out = []
    for name, items in sections:
        out.append(f"[{name}]")
        for k, v in items:
            v = str(v)
            if "\n" in v or _TRAILING_COMMENT.search(v):
                raise ServiceError(f"{k}={v!r}: systemd has no trailing comments; the text after the value "
                                   "would become part of it (write the comment on its own line)")
            out.append(f"{k}={v}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def model_path(run, model_file: str) -> str:
    return f"{run.params.service.data_dir}/models/{model_file}"


def _common_service(run, budget: MemoryBudget, place: Placement) -> list[tuple[str, str]]:
    sp = run.params.service
    items = [
        ("User", sp.user), ("Group", sp.user),
        ("Restart", "always"), ("RestartSec", "2"),
        ("CPUSchedulingPolicy", "batch"),
        ("Nice", str(sp.nice)),
        ("MemoryHigh", budget.directive),
        ("OOMScoreAdjust", str(sp.oom_score_adjust)),
        ("CPUAffinity", " ".join(str(c) for c in place.cpus)),
    ]
    if sp.mlock:
        items.append(("LimitMEMLOCK", "infinity"))
    return items


def _network(run) -> list[tuple[str, str]]:
    return [("IPAddressAllow", " ".join(run.params.service.allow_networks))]


def llama_unit(run, model_file: str, budget: MemoryBudget | None = None, place: Placement | None = None) -> Unit:
    """The llama-server unit Synapse OS runs."""
    sp = run.params.service
    budget = budget or memory_high(run)
    place = place or placement(run)
    exe = f"{sp.install_dir}/llama-server"
    model = model_path(run, model_file)
    args = [exe, "-m", model, "--host", sp.host, "--port", str(sp.port), "-t", str(place.threads),
            "-c", str(sp.ctx_size), "-np", str(sp.parallel), "--metrics"]
    if sp.mlock:
        # this llama.cpp has no --mlock any more: the load mode says it (mmap kept, as the blueprint asks)
        args += ["-lm", "mmap+mlock"]
    args += list(sp.extra_args)
    text = render([
        ("Unit", [("Description", f"Synapse inference service (llama-server, {model_file})"),
                  ("After", "network.target"),
                  ("RequiresMountsFor", f"{sp.data_dir}/models")]),
        ("Service", [
            ("Type", "exec"),
            # the pinned hash is checked at every start: a changed model never gets loaded
            ("ExecStartPre", f"/usr/bin/sha256sum --check --status {model}.sha256"),
            ("ExecStart", shlex.join(args)),
            # the launcher's RUNPATH names the build folder; its lib*.so files sit next to it here
            ("Environment", f"LD_LIBRARY_PATH={sp.install_dir}"),
            *_common_service(run, budget, place),
            ("ReadOnlyPaths", f"{sp.data_dir}/models"),
            *SANDBOX, *_network(run),
        ]),
        ("Install", [("WantedBy", "multi-user.target")]),
    ])
    return Unit("llama-server.service", text, exe,
                {"threads": place.threads, "cpus": place.cpus, "placement_source": place.source,
                 "memory_high_bytes": budget.high_bytes, "memory_source": budget.source,
                 "model": model, "port": sp.port, "user": sp.user})


def ollama_unit(run, budget: MemoryBudget | None = None, place: Placement | None = None,
                exe: str = "/usr/local/bin/ollama") -> Unit:
    """The blueprint's ollama.service, corrected (no trailing comments) and sandboxed the same way.

    Optional alternative: ollama is not bundled (it is a separate download); its model store is
    the writable ``<data_dir>/ollama``.
    """
    sp = run.params.service
    budget = budget or memory_high(run)
    place = place or placement(run)
    store = f"{sp.data_dir}/ollama"
    text = render([
        ("Unit", [("Description", "Ollama Service (High Priority)"), ("After", "network.target"),
                  ("RequiresMountsFor", store)]),
        ("Service", [
            ("Type", "exec"),
            ("ExecStart", f"{exe} serve"),
            ("Environment", f"OLLAMA_HOST={sp.host}:11434"),
            ("Environment", f"OLLAMA_MODELS={store}"),
            ("Environment", f"OLLAMA_NUM_THREADS={place.threads}"),
            ("Environment", f"HOME={store}"),
            *_common_service(run, budget, place),
            ("ReadWritePaths", store),
            *SANDBOX, *_network(run),
        ]),
        ("Install", [("WantedBy", "multi-user.target")]),
    ])
    return Unit("ollama.service", text, exe, {"threads": place.threads, "cpus": place.cpus,
                                              "memory_high_bytes": budget.high_bytes, "store": store})


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
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/lib/systemd/system").exists():
        r.probe(["cp", "-a", "/usr/lib/systemd/system", str(root / "usr/lib/systemd/")], quiet=True)
    for link, to in (("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")):
        if not (root / link).exists():
            (root / link).symlink_to(to)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/bin/sha256sum").exists():
        r.probe(["cp", "/usr/bin/sha256sum", str(root / "usr/bin/sha256sum")], quiet=True)
    for u in units:
        dest = root / "etc/systemd/system" / u.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(u.text)
    for exe, src in executables.items():
        dest = root / exe.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src is None or not Path(src).exists():
            dest.write_text("#!/bin/sh\n# placeholder: this program is not bundled (or not built yet)\nexit 1\n")
            dest.chmod(0o755)
        else:
            r.probe(["cp", "-L", str(src), str(dest)], quiet=True)
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


# ---- the untrusted-model gate ---------------------------------------------------------------------
@dataclass
class ModelGate:
    path: str
    sha256_pinned: str
    sha256_actual: str | None
    structure_ok: bool
    detail: str
    accepted: bool

    def _repr_markdown_(self) -> str:
        verdict = "**accepted**" if self.accepted else "**REFUSED**"
        return (f"model `{self.path}`: {verdict}\n\n- sha256 pinned `{self.sha256_pinned}`\n"
                f"- sha256 actual `{self.sha256_actual}`\n- GGUF structure: {self.detail}")


class ModelRefused(ValueError):
    pass


def gate_model(path: Path, sha256: str, raise_on_refusal: bool = True) -> ModelGate:
    """Refuse a model whose hash is not the pinned one or whose GGUF structure is malformed."""
    from . import model as model_mod

    path = Path(path)
    actual = model_mod.sha256_file(path) if path.exists() else None
    structure_ok, detail = False, "not checked (hash mismatch)"
    if actual == sha256:
        try:
            info = model_mod.inspect_gguf(path, sha256=actual)
            structure_ok = True
            detail = f"valid ({info.architecture}, {info.n_tensors} tensors)"
        except model_mod.ModelError as e:
            detail = f"malformed: {e}"
    elif actual is None:
        detail = "file missing"
    gate = ModelGate(str(path), sha256, actual, structure_ok, detail, accepted=actual == sha256 and structure_ok)
    if raise_on_refusal and not gate.accepted:
        raise ModelRefused(f"model {path} refused: "
                           + ("sha256 mismatch" if actual != sha256 else detail))
    return gate


def asdict_gate(g: ModelGate) -> dict:
    return asdict(g)


def gate_provisioned(run, info) -> ModelGate | str:
    """The gate for the model phase 04 provisioned (``runtime.model``), or why it cannot run yet."""
    if getattr(info, "planned", False) or not Path(str(info.path)).exists():
        return f"planned: `{Path(str(info.path)).name}` is checked against sha256 `{run.params.runtime.model.sha256}` once fetched"
    gate = gate_model(Path(str(info.path)), run.params.runtime.model.sha256, raise_on_refusal=False)
    run.record("model_gate", asdict(gate))
    if not gate.accepted:
        raise ModelRefused(f"model {info.path} refused: {gate.detail}")
    return gate


def model_file_name(run) -> str:
    m = run.params.runtime.model
    if m.kind == "pypi-wheel":
        return Path(m.member).name
    if m.kind == "path":
        return Path(str(m.path)).name
    return Path(str(m.url)).name.split("?")[0]


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


# ---- installing into a system tree -------------------------------------------------------------------
@dataclass
class Installed:
    unit: str
    binary_dir: str
    model: str
    user: str
    files: int

    def _repr_markdown_(self) -> str:
        return (f"installed `{self.unit}` (enabled): llama.cpp in `{self.binary_dir}` ({self.files} files), "
                f"model `{self.model}` (+ pinned `.sha256`), user `{self.user}`")


def install(run, root: Path, bin_dir: Path, model_file: Path, sha256: str, unit: Unit) -> Installed:
    """Install llama.cpp's bin folder, the service user, the verified model and the unit into
    ``root`` (a mounted image; ``<root>/<data_dir>`` should be the data partition, mounted)."""
    sp = run.params.service
    r = run.runner
    root = Path(root)
    dest = root / sp.install_dir.lstrip("/")
    r.change(["mkdir", "-p", str(dest)])
    r.change(["cp", "-a", f"{bin_dir}/.", str(dest)], note="llama.cpp launcher + lib*.so")
    r.change(["chown", "-R", "root:root", str(dest)])
    have = r.probe(["grep", "-q", f"^{sp.user}:", str(root / "etc/passwd")], check=False, quiet=True)
    if have.rc != 0:
        r.change(["useradd", "--root", str(root), "--system", "--user-group", "--no-create-home",
                  "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", sp.user],
                 note="dedicated service user")
    models = root / sp.data_dir.lstrip("/") / "models"
    r.change(["install", "-d", "-m", "0755", str(models)])
    target = f"{sp.data_dir}/models/{Path(model_file).name}"
    r.change(["install", "-m", "0644", str(model_file), str(models / Path(model_file).name)],
             note="the verified model onto the data partition")
    r.write_file(models / (Path(model_file).name + ".sha256"), f"{sha256}  {target}\n", mode=0o644,
                 note="pinned hash, checked by ExecStartPre at every start")
    r.write_file(root / "etc/systemd/system" / unit.name, unit.text, mode=0o644, note="inference service")
    r.change(["systemctl", f"--root={root}", "enable", unit.name])
    n = len(list(Path(bin_dir).iterdir())) if Path(bin_dir).exists() else 0
    return Installed(unit.name, sp.install_dir, target, sp.user, n)
