"""NUMA nodes: their CPUs and memory (sysfs), with lscpu's summary as the fallback.

The nodes' memory is summed and checked against /proc/meminfo's MemTotal: the two count the same
pages, so a gap means the per-node figures miss memory (a hypervisor adding memory after boot,
memory the kernel initialises lazily) and per-node placement cannot be judged from them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from ._text import grep_lines, parse_cpulist, parse_lscpu
from .base import Fact

GIB = 1024**3
#: the sum may differ from MemTotal by this much (rounding to pages, a few reserved pages)
TOLERANCE_BYTES = 16 * 1024**2
TOLERANCE_FRACTION = 0.01


def memory_check(nodes: list[dict[str, Any]], total_bytes: int | None) -> dict[str, Any]:
    """The nodes' MemTotal summed against the system's: ``{"sum_bytes", "total_bytes", "agrees", "sentence"}``
    (``agrees`` None when either side is unknown)."""
    sizes = [n.get("mem_total_bytes") for n in nodes]
    known = bool(nodes) and all(isinstance(x, int) for x in sizes)
    node_sum = sum(sizes) if known else None
    out: dict[str, Any] = {"sum_bytes": node_sum, "total_bytes": total_bytes, "agrees": None, "sentence": None}
    if node_sum is None or not total_bytes:
        return out
    gap = total_bytes - node_sum
    out["agrees"] = abs(gap) <= max(TOLERANCE_BYTES, TOLERANCE_FRACTION * total_bytes)
    if not out["agrees"]:
        which = "less" if gap > 0 else "more"
        out["sentence"] = (f"the {len(nodes)} NUMA node(s) hold {node_sum / GIB:.1f} GiB but /proc/meminfo counts "
                           f"{total_bytes / GIB:.1f} GiB in all: {abs(gap) / GIB:.1f} GiB {which} than the total. "
                           "The per-node figures miss memory (added by the hypervisor after boot, or initialised "
                           "lazily), so memory placement per node cannot be judged from them")
    return out


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    nodes: dict[int, dict[str, Any]] = {}
    for path, value in grep_lines(o.get("node_cpulist")).items():
        m = re.search(r"/node(\d+)/cpulist$", path)
        if m:
            nodes.setdefault(int(m.group(1)), {})["cpus"] = value.strip()
    for line in (o.get("node_meminfo") or "").splitlines():
        m = re.search(r"/node(\d+)/meminfo:Node \d+ MemTotal:\s+(\d+) kB", line)
        if m:
            nodes.setdefault(int(m.group(1)), {})["mem_total_bytes"] = int(m.group(2)) * 1024
    source = "sysfs /sys/devices/system/node"
    if not nodes:
        ls = parse_lscpu(o.get("lscpu"))
        for k, v in ls.items():
            m = re.match(r"NUMA node(\d+) CPU\(s\)", k)
            if m:
                nodes[int(m.group(1))] = {"cpus": v}
        source = "lscpu"
    out = []
    for n in sorted(nodes):
        d = nodes[n]
        out.append({"node": n, "cpus": d.get("cpus"), "n_cpus": len(parse_cpulist(d.get("cpus"))),
                    "mem_total_bytes": d.get("mem_total_bytes")})
    total = None
    for line in (o.get("meminfo") or "").splitlines():
        m = re.match(r"MemTotal:\s+(\d+) kB", line)
        if m:
            total = int(m.group(1)) * 1024
    return {"count": len(out), "nodes": out, "source": source if out else None, "memory": memory_check(out, total)}


FACT = Fact(
    name="numa",
    commands={
        "node_cpulist": ("grep", "-r", "--include=cpulist", ".", "/sys/devices/system/node"),
        "node_meminfo": ("grep", "-r", "--include=meminfo", "MemTotal", "/sys/devices/system/node"),
        "lscpu": ("lscpu", "-J"),
        "meminfo": ("cat", "/proc/meminfo"),
    },
    parse=parse,
    optional=frozenset({"node_cpulist", "node_meminfo", "meminfo"}),
    fallbacks={"lscpu": ("lscpu",)},
)
