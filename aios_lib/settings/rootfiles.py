"""Whole files of a system root: hostname, fstab, machine-id."""
from __future__ import annotations

from .base import FileSetting


def Hostname(name: str) -> FileSetting:
    return FileSetting("/etc/hostname", name + "\n", name="hostname")


def Hosts(name: str) -> FileSetting:
    return FileSetting("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
                       name="hosts")


def Fstab(content: str, note: str = "") -> FileSetting:
    return FileSetting("/etc/fstab", content, name="fstab", note=note)


def EmptyMachineId() -> FileSetting:
    """An empty /etc/machine-id: each installed copy gets its own id on first boot."""
    return FileSetting("/etc/machine-id", "", name="machine-id (empty: set on first boot)", mode=0o444)
