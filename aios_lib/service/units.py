"""Phase 6: the inference service as a systemd unit, rendered from the parameters.

* threads and CPUs come from :func:`aios_lib.runtime.cpus.cpu_plan` (``"service"``: the parameters,
  else phase 05's choice, else phase 01's physical cores); :func:`memory_high` computes
  ``MemoryHigh`` from the machine's RAM minus the stated reserve.
* :func:`llama_unit` / :func:`ollama_unit` render unit files from the parameters. Values never carry
  trailing comments: systemd has no inline comments, so the blueprint's ``MemoryHigh=28G  # ...``
  is an invalid value that systemd ignores (with a warning) and the limit silently disappears.

systemd checks them in :mod:`aios_lib.service.unit_checks`; :mod:`aios_lib.service.model_gate`
decides whether a model may be served; :mod:`aios_lib.service.install` puts it all into a root.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..core.records import find_value
from ..facts import gather, memory
from ..runtime.cpus import CpuPlan, cpu_plan

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
        total = find_value((run.recorded("01", "survey") or {}).get("memory", {}), "total_bytes") \
            or find_value(run.recorded("01", "survey") or {}, "total_bytes")
        if total:
            ram_bytes, source = int(total), "phase 01 survey (memory total)"
        else:
            ram_bytes = gather(run.runner, memory.MEMINFO)["MemTotal"]
            source = "this host's /proc/meminfo (no phase 01 record)"
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


def _common_service(run, budget: MemoryBudget, place: CpuPlan) -> list[tuple[str, str]]:
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


def chosen_server_flags(run) -> dict[str, str | None]:
    """The llama-server flags phase 05's proof kept for this machine (``05/chosen``): each one beat
    llama.cpp's default with a CI above 1 there. Threads come through :func:`cpu_plan`."""
    if run.params.profile:  # a tuned profile was applied at load: its flags are in service.extra_args
        return {}
    chosen = run.recorded("05", "chosen") or {}
    if chosen.get("planned"):
        return {}
    extra = set(run.params.service.extra_args)
    return {k: v for k, v in (chosen.get("server_flags") or {}).items() if k != "-t" and k not in extra}


def provenance(run):
    """Where the unit's tunable values come from: a tuned profile (which tune run), phase 05 of this
    run, the parameter file, or a fallback, one row per value."""
    import pandas as pd

    sp = run.params.service
    prof = run.params.profile or {}
    applied = prof.get("applied") or {}
    place = cpu_plan(run, "service")
    rows = [{"value": "threads (-t)", "in the unit": place.threads,
             "from": applied["service.threads"][1] if "service.threads" in applied else place.source},
            {"value": "CPUAffinity", "in the unit": " ".join(map(str, place.cpus)),
             "from": applied["service.cpus"][1] if "service.cpus" in applied else place.source},
            {"value": "Nice", "in the unit": sp.nice,
             "from": applied["service.nice"][1] if "service.nice" in applied else "parameters (service.nice)"}]
    for k, (v, origin) in applied.items():
        if k.startswith("llama-server "):
            rows.append({"value": k, "in the unit": v if v is not None else "(flag)", "from": origin})
    for k, v in chosen_server_flags(run).items():
        rows.append({"value": f"llama-server {k}", "in the unit": v if v is not None else "(flag)",
                     "from": "phase 05 of this run (the knob screen kept it)"})
    if "system.thp" in applied:
        rows.append({"value": "THP mode (image)", "in the unit": applied["system.thp"][0], "from": applied["system.thp"][1]})
    return pd.DataFrame(rows, columns=["value", "in the unit", "from"])


def llama_unit(run, model_file: str, budget: MemoryBudget | None = None, place: CpuPlan | None = None) -> Unit:
    """The llama-server unit Synapse OS runs."""
    sp = run.params.service
    budget = budget or memory_high(run)
    place = place or cpu_plan(run, "service")
    exe = f"{sp.install_dir}/llama-server"
    model = model_path(run, model_file)
    args = [exe, "-m", model, "--host", sp.host, "--port", str(sp.port), "-t", str(place.threads),
            "-c", str(sp.ctx_size), "-np", str(sp.parallel), "--metrics"]
    chosen = chosen_server_flags(run)
    if sp.mlock and "-lm" not in chosen:
        # this llama.cpp has no --mlock any more: the load mode says it (mmap kept, as the blueprint asks)
        args += ["-lm", "mmap+mlock"]
    for flag, value in chosen.items():
        args += [flag] if value is None else [flag, str(value)]
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
                 "flags_from_phase_05": chosen,
                 "memory_high_bytes": budget.high_bytes, "memory_source": budget.source,
                 "model": model, "port": sp.port, "user": sp.user})


def ollama_unit(run, budget: MemoryBudget | None = None, place: CpuPlan | None = None,
                exe: str = "/usr/local/bin/ollama") -> Unit:
    """The blueprint's ollama.service, corrected (no trailing comments) and sandboxed the same way.

    Optional alternative: ollama is not bundled (it is a separate download); its model store is
    the writable ``<data_dir>/ollama``.
    """
    sp = run.params.service
    budget = budget or memory_high(run)
    place = place or cpu_plan(run, "service")
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


def model_file_name(run) -> str:
    m = run.params.runtime.model
    if m.kind == "pypi-wheel":
        return Path(m.member).name
    if m.kind == "path":
        return Path(str(m.path)).name
    return Path(str(m.url)).name.split("?")[0]
