"""Phase 2: the base system (partitioning, bootstrap, configuration, boot).

Extended by the base-system phase; the defaults describe the blueprint's choices as corrected:

* mount options: the blueprint's ``noatime, nodiratime, discard=async, commit=60`` is not valid
  for XFS (``commit=`` is ext4/btrfs, ``discard=async`` is btrfs); ``noatime`` alone is what XFS
  takes, and ``nodiratime`` is implied by it. Validated against ``filesystem`` and normalised when
  the file loads: ``mount_options`` holds what goes into fstab.
* kernel command line: the blueprint's ``auditing=0 logic=no`` are not kernel parameters;
  ``audit=0`` is. Unknown names are errors when the file loads; ``mitigations=off`` also needs
  ``machine.trusted_offline: true`` (a rule of the whole file, also checked when it loads).
* zram: ``zram-fraction`` is deprecated; ``zram-size = ram`` is the same thing.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Section, refuse
from .types import KernelCmdline, MountOptions

#: the blueprint's section 1.2 and 5.1 units, plus Debian's periodic jobs that wake an idle box.
#: Only those that exist in the target are masked; the record lists which.
DEFAULT_MASKS = [
    "bluetooth.service", "cups.service", "avahi-daemon.service", "ModemManager.service",
    "wpa_supplicant.service", "accounts-daemon.service", "upower.service", "switcheroo-control.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "man-db.timer", "systemd-firstboot.service",
]


class BaseSystem(Section):
    distro: Literal["debian", "arch"] = "debian"
    suite: str = "bookworm"  # debian only
    mirror: str = "auto"  # auto: the host's apt source (debian) / the host's mirrorlist (arch)
    #: arch: the pacstrap package list (the blueprint's, plus a kernel, xfsprogs, dracut and
    #: zram-generator so the result boots and the settings below exist). debian: extra packages.
    packages: list[str] = Field(default_factory=list)
    hostname: str = Field("synapse", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    filesystem: Literal["xfs", "ext4"] = "xfs"
    esp_size_mib: int = Field(512, ge=100, le=4096)
    #: root partition size; null: the rest of the disk. A size leaves free space after the root
    #: for a later phase's partition (phase 6's persistent /var/ai-data).
    root_size_mib: int | None = Field(None, ge=1024)
    #: normalised for ``filesystem`` (declared above: the validator reads it)
    mount_options: MountOptions = ["noatime"]
    #: kernel parameters besides root=/rw (added by the phase)
    kernel_cmdline: KernelCmdline = ["console=tty0", "console=ttyS0,115200", "nowatchdog", "nmi_watchdog=0",
                                 "audit=0", "transparent_hugepage=madvise"]
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
    mask_units: list[str] = Field(default_factory=lambda: list(DEFAULT_MASKS))
    default_target: str = "multi-user.target"
    #: a root autologin on this serial tty for the first boot (null: none)
    autologin_tty: str | None = "ttyS0"
    #: boot the finished image in QEMU and compare what the guest reports with these settings
    verify_boot: bool = True
    #: seconds a verification boot may take before it counts as failed (TCG: about a minute)
    boot_timeout_s: int = Field(420, ge=30, le=3600)
    #: reuse a finished, verified image with identical inputs from ~/.cache/synapse/base-image
    use_image_cache: bool = True

    @field_validator("sysctl")
    @classmethod
    def _sysctl_names(cls, v: dict) -> dict:
        import re

        from . import sysctl_names

        bad = [k for k in v if not re.fullmatch(r"[a-z0-9_]+(\.[a-zA-Z0-9_*/-]+)+", k)]
        if bad:
            raise ValueError(f"not sysctl names: {bad}; use dotted names such as vm.swappiness")
        refuse(sysctl_names.check(k, x) for k, x in v.items())
        return v

    @field_validator("journald")
    @classmethod
    def _journald_options(cls, v: dict) -> dict:
        from .systemd_values import journald_option

        refuse(journald_option(k, x) for k, x in v.items())
        return v

    @field_validator("mask_units")
    @classmethod
    def _unit_names(cls, v: list[str]) -> list[str]:
        from .systemd_values import unit_name

        refuse(unit_name(u) for u in v)
        return v

    @field_validator("default_target")
    @classmethod
    def _a_target(cls, v: str) -> str:
        from .systemd_values import unit_name

        refuse([unit_name(v, kind="target")])
        return v

    @field_validator("autologin_tty")
    @classmethod
    def _a_tty(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(r"tty[A-Za-z]*[0-9]+|hvc[0-9]+|console", v):
            raise ValueError(f"`{v}` is not a terminal name (ttyS0, tty1, hvc0): agetty would find no such device")
        return v

    @field_validator("zram_size")
    @classmethod
    def _zram_size(cls, v: str) -> str:
        import re

        # zram-generator: an arithmetic expression of `ram` (MiB) with + - * / min() max(), or a number
        words = re.findall(r"[A-Za-z_]+", v)
        if not v.strip() or set(words) - {"ram", "min", "max"} or not re.fullmatch(r"[A-Za-z0-9_ .+\-*/(),]+", v):
            raise ValueError(f"`{v}` is not a zram-size expression (e.g. ram, ram / 2, min(ram / 2, 4096))")
        if re.fullmatch(r"\s*0+(\.0+)?\s*", v) or re.fullmatch(r"\s*-.*", v):
            raise ValueError(f"`{v}`: a zram device needs a positive size")
        return v

    @field_validator("packages")
    @classmethod
    def _package_names(cls, v: list[str]) -> list[str]:
        import re

        bad = [x for x in v if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+.:=~_@-]*", x)]
        if bad:
            raise ValueError(f"not package names: {bad} (one package per list item, e.g. libgomp1)")
        return v
