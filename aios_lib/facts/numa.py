"""NUMA nodes: their CPUs and memory (sysfs), with lscpu's summary as the fallback."""
from __future__ import annotations

import re
from typing import Any, Mapping

from ._text import grep_lines, parse_cpulist, parse_lscpu
from .base import Fact


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
    return {"count": len(out), "nodes": out, "source": source if out else None}


FACT = Fact(
    name="numa",
    commands={
        "node_cpulist": ("grep", "-r", "--include=cpulist", ".", "/sys/devices/system/node"),
        "node_meminfo": ("grep", "-r", "--include=meminfo", "MemTotal", "/sys/devices/system/node"),
        "lscpu": ("lscpu", "-J"),
    },
    parse=parse,
    optional=frozenset({"node_cpulist", "node_meminfo"}),
    fallbacks={"lscpu": ("lscpu",)},
)
