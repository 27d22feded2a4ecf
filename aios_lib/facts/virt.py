"""Virtualization: systemd-detect-virt (VM and container separately), the CPU's hypervisor flag and
lscpu's "Hypervisor vendor"."""
from __future__ import annotations

from typing import Any, Mapping

from ._text import parse_cpuinfo, parse_lscpu
from .base import Fact


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    vm = (o.get("virt_vm") or "").strip() or None
    container = (o.get("virt_container") or "").strip() or None
    vm = None if vm == "none" else vm
    container = None if container == "none" else container
    procs = parse_cpuinfo(o.get("cpuinfo"))
    ls = parse_lscpu(o.get("lscpu"))
    flags = (procs[0].get("flags", "") if procs else ls.get("Flags", "")).split()
    flag = "hypervisor" in flags
    hv_vendor = ls.get("Hypervisor vendor")
    virtual = bool(vm or flag or hv_vendor)
    if vm:
        what = f"virtual machine ({vm})"
    elif hv_vendor:
        what = f"virtual machine ({hv_vendor}, from lscpu)"
    elif flag:
        what = "virtual machine (hypervisor flag set)"
    else:
        what = "bare metal"
    if container:
        what += f", inside a {container} container"
    return {"vm": vm, "container": container, "hypervisor_flag": flag, "hypervisor_vendor": hv_vendor,
            "virtual": virtual, "summary": what}


FACT = Fact(
    name="virt",
    commands={
        "virt_vm": ("systemd-detect-virt", "--vm"),
        "virt_container": ("systemd-detect-virt", "--container"),
        "cpuinfo": ("cat", "/proc/cpuinfo"),
        "lscpu": ("lscpu", "-J"),
    },
    parse=parse,
    optional=frozenset({"virt_vm", "virt_container"}),  # exit 1 and "none" when there is none
    fallbacks={"lscpu": ("lscpu",)},
)
