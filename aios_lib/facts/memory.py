"""Memory: total and available (/proc/meminfo), hugepages, and module speed from dmidecode.

dmidecode needs root and real SMBIOS tables; in containers and many VMs it prints nothing useful,
so speed and module list are optional (None / empty).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .base import Fact


def parse_meminfo(text: str | None) -> dict[str, int]:
    """/proc/meminfo -> {key: bytes} (kB lines) or plain counts (HugePages_* lines)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        m = re.match(r"^([A-Za-z0-9_()]+):\s+(\d+)(?:\s*(kB))?", line.strip())
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if m.group(3) else 1)
    return out


def parse_dmidecode_memory(text: str | None) -> list[dict[str, Any]]:
    """``dmidecode -t memory`` -> the populated Memory Device entries."""
    modules: list[dict[str, Any]] = []
    for block in re.split(r"\n\s*\n", text or ""):
        if "Memory Device" not in block:
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if ":" in line and line.startswith(("\t", " ")):
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        size = fields.get("Size", "")
        if not size or size.lower().startswith(("no module", "not installed", "unknown")):
            continue
        modules.append({
            "locator": fields.get("Locator"),
            "size": size,
            "type": fields.get("Type"),
            "speed": fields.get("Speed"),
            "configured_speed": fields.get("Configured Memory Speed") or fields.get("Configured Clock Speed"),
            "manufacturer": fields.get("Manufacturer"),
            "part_number": fields.get("Part Number"),
        })
    return modules


def _mts(text: str | None) -> int | None:
    m = re.match(r"^(\d+)\s*(MT/s|MHz)", text or "")
    return int(m.group(1)) if m else None


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    mi = parse_meminfo(o.get("meminfo"))
    modules = parse_dmidecode_memory(o.get("dmidecode"))
    speeds = [s for s in (_mts(m.get("configured_speed")) or _mts(m.get("speed")) for m in modules) if s]
    return {
        "total_bytes": mi.get("MemTotal"),
        "available_bytes": mi.get("MemAvailable"),
        "swap_total_bytes": mi.get("SwapTotal"),
        "hugepages_total": mi.get("HugePages_Total"),
        "hugepages_free": mi.get("HugePages_Free"),
        "hugepage_size_bytes": mi.get("Hugepagesize"),
        "anon_hugepages_bytes": mi.get("AnonHugePages"),
        "modules": modules,
        "module_types": sorted({m["type"] for m in modules if m.get("type")}),
        "speed_mts": min(speeds) if speeds else None,  # the slowest module sets the pace
    }


FACT = Fact(
    name="memory",
    commands={
        "meminfo": ("cat", "/proc/meminfo"),
        "dmidecode": ("dmidecode", "-t", "memory"),
    },
    parse=parse,
    optional=frozenset({"dmidecode"}),
)


#: /proc/meminfo alone ({key: bytes}), for a value the survey did not record
MEMINFO = Fact(name="meminfo", commands={"meminfo": ("cat", "/proc/meminfo")},
               parse=lambda o: parse_meminfo(o.get("meminfo")))
