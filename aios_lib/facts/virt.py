"""Virtualization: systemd-detect-virt (VM and container separately) and the cpuinfo hypervisor flag."""
from __future__ import annotations

from typing import Any, Mapping

from ._text import parse_cpuinfo
from .base import Fact


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    vm = (o.get("virt_vm") or "").strip() or None
    container = (o.get("virt_container") or "").strip() or None
    vm = None if vm == "none" else vm
    container = None if container == "none" else container
    procs = parse_cpuinfo(o.get("cpuinfo"))
    flag = bool(procs) and "hypervisor" in procs[0].get("flags", "").split()
    virtual = bool(vm or flag)
    if vm:
        what = f"virtual machine ({vm})"
    elif flag:
        what = "virtual machine (hypervisor flag set)"
    else:
        what = "bare metal"
    if container:
        what += f", inside a {container} container"
    return {"vm": vm, "container": container, "hypervisor_flag": flag, "virtual": virtual,
            "summary": what}


FACT = Fact(
    name="virt",
    commands={
        "virt_vm": ("systemd-detect-virt", "--vm"),
        "virt_container": ("systemd-detect-virt", "--container"),
        "cpuinfo": ("cat", "/proc/cpuinfo"),
    },
    parse=parse,
    optional=frozenset({"virt_vm", "virt_container"}),  # exit 1 and "none" when there is none
)
