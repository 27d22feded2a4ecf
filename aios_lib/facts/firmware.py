"""Firmware: how this system was started. UEFI, legacy BIOS, or no firmware at all.

* UEFI exactly when the kernel exposes ``/sys/firmware/efi``.
* Every PC firmware (BIOS or UEFI) hands the kernel SMBIOS tables, which it shows as
  ``/sys/firmware/dmi``. A hypervisor that loads the kernel itself (Firecracker, cloud-hypervisor,
  QEMU's microvm) runs no firmware and gives none: no ``dmi`` there means direct kernel boot.
* A boot loader leaves its mark on the kernel command line: GRUB and syslinux add ``BOOT_IMAGE=``,
  systemd-boot and the EFI stub ``initrd=``. Without either, nothing chose the kernel from a disk.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Fact

#: command-line words a boot loader adds (the kernel itself never does)
LOADER_MARKS = {"BOOT_IMAGE": "GRUB or syslinux (BOOT_IMAGE=)", "initrd": "systemd-boot or the EFI stub (initrd=)"}


def boot_loader_mark(cmdline: str | None) -> str | None:
    """The boot loader a kernel command line shows, or None (``BOOT_IMAGE=/vmlinuz ...`` -> GRUB or syslinux)."""
    words = (cmdline or "").split(" -- ")[0].split()  # after "--" the words are init's, not the kernel's
    for word in words:
        name = word.split("=", 1)[0]
        if name in LOADER_MARKS and "=" in word:
            return LOADER_MARKS[name]
    return None


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    uefi = bool((o.get("efi") or "").strip())
    size = (o.get("fw_platform_size") or "").strip()
    dirs = (o.get("firmware") or "").split()
    cmdline = (o.get("cmdline") or "").strip()
    loader = boot_loader_mark(cmdline)
    smbios = "dmi" in dirs if dirs else None  # None: /sys/firmware was not read
    if uefi:
        kind, mode = "uefi", "UEFI"
        why = "/sys/firmware/efi exists"
    elif not dirs and not cmdline:
        kind, mode = "unknown", "unknown (/sys/firmware and /proc/cmdline not read)"
        why = "neither /sys/firmware nor the kernel command line could be read"
    elif smbios is False and not loader:
        kind, mode = "direct", "direct kernel boot (no firmware)"
        why = ("/sys/firmware has no dmi (no SMBIOS tables: no BIOS or UEFI ran) and the kernel command line has no "
               "boot loader's mark (no BOOT_IMAGE=, no initrd=): the hypervisor started the kernel itself")
    else:
        kind, mode = "bios", "BIOS (legacy)"
        why = "/sys/firmware/efi does not exist" + (f"; loaded by {loader}" if loader else
                                                    "; the command line shows no boot loader (the firmware or "
                                                    "the hypervisor loaded the kernel)" if cmdline else "")
    return {
        "uefi": uefi,
        "kind": kind,
        "boot_mode": mode,
        "why": why,
        "boot_loader": loader,
        "smbios": smbios,
        "uefi_bits": int(size) if size.isdigit() else None,
        "firmware_dirs": dirs,
    }


FACT = Fact(
    name="firmware",
    commands={
        "efi": ("ls", "-d", "/sys/firmware/efi"),
        "fw_platform_size": ("cat", "/sys/firmware/efi/fw_platform_size"),
        "firmware": ("ls", "/sys/firmware"),
        "cmdline": ("cat", "/proc/cmdline"),
    },
    parse=parse,
    optional=frozenset({"efi", "fw_platform_size", "firmware", "cmdline"}),
)
