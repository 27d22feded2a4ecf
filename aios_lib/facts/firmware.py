"""Firmware: UEFI exactly when the kernel exposes /sys/firmware/efi (else legacy BIOS boot)."""
from __future__ import annotations

from typing import Any, Mapping

from .base import Fact


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    uefi = bool((o.get("efi") or "").strip())
    size = (o.get("fw_platform_size") or "").strip()
    return {
        "uefi": uefi,
        "boot_mode": "UEFI" if uefi else "BIOS (legacy)",
        "uefi_bits": int(size) if size.isdigit() else None,
        "firmware_dirs": (o.get("firmware") or "").split(),
    }


FACT = Fact(
    name="firmware",
    commands={
        "efi": ("ls", "-d", "/sys/firmware/efi"),
        "fw_platform_size": ("cat", "/sys/firmware/efi/fw_platform_size"),
        "firmware": ("ls", "/sys/firmware"),
    },
    parse=parse,
    optional=frozenset({"efi", "fw_platform_size", "firmware"}),
)
