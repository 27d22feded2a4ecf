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


# ---- can QEMU use KVM here? -------------------------------------------------------------------
def parse_kvm_trial(output: str, timed_out: bool) -> dict[str, Any]:
    """Pure: a short firmware boot under KVM that is still running when it is stopped, without a
    KVM error, means KVM works. ``{"usable": bool, "why": the line that says why not}``."""
    text = output or ""
    if timed_out and "KVM internal error" not in text and "failed to" not in text:
        return {"usable": True, "why": None}
    lines = text.strip().splitlines() or ["exited"]
    why = next((ln for ln in lines if "KVM internal error" in ln or "failed to" in ln), lines[-1])
    return {"usable": False, "why": why.strip()[:160]}


def kvm_trial(qemu: str, firmware_code: str, seconds: float = 8.0) -> Fact:
    """Boot the UEFI firmware alone under KVM for ``seconds`` (on the development machine /dev/kvm
    exists but OVMF under it dies with ``KVM internal error``)."""
    argv = (qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-drive", f"if=pflash,format=raw,readonly=on,file={firmware_code}")
    return Fact("kvm_trial", {"qemu": argv},
                parse=lambda o: parse_kvm_trial((o.get("qemu") or "") + (o.get("qemu.stderr") or ""),
                                                bool(o.get("qemu.timed_out"))),
                status=frozenset({"qemu"}), timeouts={"qemu": seconds})
