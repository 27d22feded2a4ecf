"""Phase 2: the base system (partitioning, bootstrap, configuration, boot).

Extended by the base-system phase; the defaults describe the blueprint's choices as corrected.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class BaseSystem(Section):
    distro: Literal["debian", "arch"] = "debian"
    suite: str = "bookworm"  # debian only
    mirror: str = "auto"  # auto: the host's apt source (debian) / mirrorlist (arch)
    packages: list[str] = Field(default_factory=list)  # extra packages on top of the distro's base list
    hostname: str = Field("synapse", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    filesystem: Literal["xfs", "ext4"] = "xfs"
    esp_size_mib: int = Field(512, ge=100, le=4096)
    mount_options: list[str] = ["noatime"]
    kernel_cmdline: list[str] = ["nowatchdog", "nmi_watchdog=0", "audit=0", "transparent_hugepage=madvise"]
    thp: Literal["always", "madvise", "never"] = "madvise"
    sysctl: dict[str, str | int] = Field(default_factory=lambda: {
        "vm.swappiness": 180,  # zram is far cheaper than disk swap, so prefer it over dropping page cache
        "vm.page-cluster": 0,  # zram has no seek cost: read one page, not 8
        "vm.dirty_ratio": 10,
        "vm.dirty_background_ratio": 5,
    })
    zram_size: str = "ram"
    zram_algorithm: Literal["zstd", "lz4", "lzo-rle"] = "zstd"
    journald: dict[str, str] = Field(default_factory=lambda: {
        "Storage": "volatile", "SystemMaxUse": "50M", "RuntimeMaxUse": "50M"})
    mask_units: list[str] = ["bluetooth.service", "cups.service", "avahi-daemon.service", "ModemManager.service"]
