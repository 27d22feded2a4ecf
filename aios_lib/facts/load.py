"""The machine's load: the aggregate CPU times of /proc/stat and /proc/loadavg.

One parse gives the raw fields; each reader computes its own figure from them, because the two
that exist answer different questions and their records must not change:

* the benchmark (:func:`aios_lib.measure.llama_bench.load_during`) asks "what did other processes
  use while llama-bench ran": busy **without** steal (:attr:`CpuTimes.busy_excl_steal`), steal
  reported apart (a hypervisor taking the CPU is not another process here);
* the idle-CPU check of the booted image (:func:`aios_lib.service.hardening.idle_cpu`) asks "how
  much of all CPU time was not idle": busy **with** steal (:attr:`CpuTimes.busy_incl_steal`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .base import Fact

#: the aggregate line's first eight fields (guest and guest_nice are already in user and nice)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in clock ticks, and the number of ``cpuN`` lines."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int
    ncpu: int = 0

    @property
    def total(self) -> int:
        return self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal

    @property
    def idle_all(self) -> int:
        return self.idle + self.iowait

    @property
    def busy_excl_steal(self) -> int:
        return self.user + self.nice + self.system + self.irq + self.softirq

    @property
    def busy_incl_steal(self) -> int:
        return self.total - self.idle_all


def parse_proc_stat(text: str | None) -> CpuTimes:
    """/proc/stat -> :class:`CpuTimes` (missing trailing fields of an old kernel read as 0).
    Raises ValueError when there is no aggregate ``cpu`` line."""
    agg: list[int] | None = None
    ncpu = 0
    for ln in (text or "").splitlines():
        parts = ln.split()
        if not parts:
            continue
        if parts[0] == "cpu" and agg is None:
            agg = [int(x) for x in parts[1:9]]
            agg += [0] * (8 - len(agg))
        elif parts[0].startswith("cpu") and parts[0][3:].isdigit():
            ncpu += 1
    if agg is None:
        raise ValueError("no aggregate `cpu` line in /proc/stat text")
    return CpuTimes(*agg, ncpu=ncpu)


def parse_loadavg(text: str | None) -> dict[str, Any] | None:
    """/proc/loadavg (``0.52 0.58 0.59 3/517 12345``) -> {loadavg: [1, 5, 15 min], running}; None without one."""
    for ln in (text or "").splitlines():
        parts = ln.split()
        if len(parts) == 5 and "/" in parts[3] and re.match(r"^\d+\.\d+$", parts[0]):
            return {"loadavg": [float(parts[0]), float(parts[1]), float(parts[2])],
                    "running": int(parts[3].split("/")[0])}
    return None


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    """{"cpu": CpuTimes or None, "loadavg": {...} or None} from one ``cat /proc/stat /proc/loadavg``."""
    text = o.get("load") or ""
    try:
        times: CpuTimes | None = parse_proc_stat(text)
    except ValueError:
        times = None
    return {"cpu": times, "loadavg": parse_loadavg(text)}


#: both files in one read, so the two stay consistent with each other
FACT = Fact(name="load", commands={"load": ("cat", "/proc/stat", "/proc/loadavg")}, parse=parse,
            optional=frozenset({"load"}))
