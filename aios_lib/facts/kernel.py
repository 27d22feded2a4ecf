"""The running kernel: release, command line, THP mode, cpufreq governor, CPU mitigations."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

from ._text import grep_lines, parse_lscpu
from .base import Fact


def bracketed(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'."""
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else None


def vulnerability_status(value: str) -> str:
    v = value.strip()
    if v.startswith("Not affected"):
        return "not affected"
    if v.startswith("Mitigation"):
        return "mitigated"
    if v.startswith("Vulnerable"):
        return "vulnerable"
    if v.lower().startswith("unknown"):
        return "unknown"
    return "other"


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    cmdline = (o.get("cmdline") or "").strip()
    args = cmdline.split(" -- ")[0].split()
    mitigations = next((a.split("=", 1)[1] for a in args if a.startswith("mitigations=")), None)
    vulns = {}
    for path, value in sorted(grep_lines(o.get("vulnerabilities")).items()):
        vulns[path.rstrip("/").split("/")[-1]] = value.strip()
    vulns_source = "sysfs" if vulns else None
    if not vulns:  # lscpu shows the same files as "Vulnerability Spectre v2: ..." (with ';' for ':')
        for k, v in parse_lscpu(o.get("lscpu")).items():
            if k.startswith("Vulnerability "):
                vulns[k[len("Vulnerability "):].strip().lower().replace(" ", "_")] = v
        vulns_source = "lscpu" if vulns else None
    govs = {}
    for path, value in grep_lines(o.get("governor")).items():
        m = re.search(r"/(policy\d+|cpu\d+)/", path)
        govs[m.group(1) if m else path] = value.strip()
    counts = Counter(vulnerability_status(v) for v in vulns.values())
    version = (o.get("uname_v") or "").strip()
    return {
        "release": (o.get("uname_r") or "").strip() or None,
        "version": version or None,
        "preempt": next((w for w in ("PREEMPT_DYNAMIC", "PREEMPT_RT", "PREEMPT") if w in version.split()), None),
        "cmdline": cmdline,
        "cmdline_args": args,
        "mitigations_arg": mitigations,
        "thp_enabled": bracketed(o.get("thp")),
        "thp_defrag": bracketed(o.get("thp_defrag")),
        "governors": govs,
        "governor": (sorted(set(govs.values()))[0] if len(set(govs.values())) == 1 else
                     ", ".join(sorted(set(govs.values()))) or None),
        "vulnerabilities": dict(sorted(vulns.items())),
        "vulnerabilities_source": vulns_source,
        "vulnerability_counts": dict(counts),
    }


FACT = Fact(
    name="kernel",
    commands={
        "uname_r": ("uname", "-r"),
        "uname_v": ("uname", "-v"),
        "cmdline": ("cat", "/proc/cmdline"),
        "thp": ("cat", "/sys/kernel/mm/transparent_hugepage/enabled"),
        "thp_defrag": ("cat", "/sys/kernel/mm/transparent_hugepage/defrag"),
        "governor": ("grep", "-r", "--include=scaling_governor", ".", "/sys/devices/system/cpu/cpufreq"),
        "vulnerabilities": ("grep", "-r", ".", "/sys/devices/system/cpu/vulnerabilities"),
        "lscpu": ("lscpu", "-J"),
    },
    parse=parse,
    optional=frozenset({"thp", "thp_defrag", "governor", "vulnerabilities"}),
    fallbacks={"lscpu": ("lscpu",)},
)
