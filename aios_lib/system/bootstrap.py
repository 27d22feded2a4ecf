"""Bootstrap a minimal system into a mounted root: pacstrap (Arch) or debootstrap (Debian).

Arch is the blueprint's base (section 2.1 step 4). Its mirrors are unreachable from the
development machine, so that path is exercised in plan mode and unit tests; Debian runs for real.

Both paths end with a systemd-based initrd built by dracut: ``systemd.volatile=overlay`` (the
read-only root of phase 6) only works with one; Debian's default initramfs-tools ignores it
silently. dracut is configured before it is installed, so its first initrd already has the
systemd module, the overlay/xfs/virtio/nvme drivers and zstd compression.

Package downloads are kept between runs: debootstrap's ``--cache-dir`` is
``~/.cache/synapse/debootstrap/<suite>-amd64`` and apt's archive directory inside the target is a
bind mount of ``~/.cache/synapse/apt/<suite>`` while packages are installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .disk import MountStack
from ..core.paths import cache_path
from ..core.runner import Runner
from ..facts import rootfs
from ..facts.base import gather

#: what a Debian target needs to boot and hold the phase's settings (systemd-boot, zram, xfs, ...)
DEBIAN_BASE = ["linux-image-amd64", "systemd", "systemd-sysv", "systemd-zram-generator", "xfsprogs", "udev", "dbus",
               "kmod", "systemd-boot", "systemd-boot-efi", "util-linux", "procps", "iproute2", "less", "zstd"]
#: installed after debootstrap (debootstrap cannot swap initramfs-tools for dracut itself:
#: `--exclude=initramfs-tools --include=dracut` fails with "Failure while installing base packages")
DEBIAN_AFTER = ["dracut"]
#: the blueprint's pacstrap list plus what the phase needs: a kernel to boot until phase 3 builds
#: one, xfsprogs for the root, dracut for a systemd initrd, zram-generator for zram swap
ARCH_BASE = ["base", "linux", "linux-firmware", "intel-ucode", "xfsprogs", "dracut", "zram-generator",
             "base-devel", "vim", "git", "networkmanager"]

DRACUT_CONF = """\
# Synapse: a generic systemd-based initrd (systemd.volatile=overlay needs the systemd module)
hostonly="no"
compress="zstd"
add_dracutmodules+=" systemd "
add_drivers+=" overlay xfs ext4 virtio_blk virtio_pci virtio_scsi nvme ahci sd_mod "
"""


def host_debian_mirror(runner: Runner) -> str:
    """The main mirror this machine's apt uses (the same packages, from where they are reachable)."""
    return gather(runner, rootfs.apt_sources(rootfs.host_apt_sources())) or "http://deb.debian.org/debian"


@dataclass
class BootstrapResult:
    distro: str
    packages: list[str]
    mirror: str
    kernel: str | None = None
    commands: list = field(default_factory=list)
    cache: str | None = None

    def _repr_markdown_(self) -> str:
        return (f"**{self.distro}** bootstrapped from `{self.mirror}`; kernel `{self.kernel or '(planned)'}`; "
                f"{len(self.packages)} packages requested; package cache `{self.cache}`\n\n"
                + "\n".join(f"- `{c.cmdline}`" + (" (planned)" if c.planned else f" rc={c.rc} {c.duration:.0f}s")
                            for c in self.commands))


def debian_packages(system) -> list[str]:
    return list(dict.fromkeys(DEBIAN_BASE + list(system.packages)))


def arch_packages(system) -> list[str]:
    return list(system.packages) or list(ARCH_BASE)


def kernel_version(runner: Runner, root: Path) -> str | None:
    """The newest kernel ``root`` has modules for."""
    vers = gather(runner, rootfs.kernel_versions(root))
    return vers[-1] if vers else None


def bootstrap(runner: Runner, root: Path, system, stack: MountStack) -> BootstrapResult:
    """Install the base system into ``root`` (already mounted) and a dracut initrd."""
    start = len(runner.history)
    runner.write_file(root / "etc/dracut.conf.d/90-synapse.conf", DRACUT_CONF, note="dracut: systemd initrd")
    if system.distro == "debian":
        res = _debian(runner, root, system, stack)
    else:
        res = _arch(runner, root, system)
    res.kernel = kernel_version(runner, root)
    res.commands = [c for c in runner.history[start:] if not (c.kind == "probe")]
    return res


def _debian(runner: Runner, root: Path, system, stack: MountStack) -> BootstrapResult:
    mirror = host_debian_mirror(runner) if system.mirror == "auto" else system.mirror
    cache = cache_path("debootstrap", f"{system.suite}-amd64")
    apt_cache = cache_path("apt", system.suite)
    runner.work(["mkdir", "-p", str(cache), str(apt_cache / "partial")], quiet=True,
                note="package caches kept between runs")
    pkgs = debian_packages(system)
    runner.change(["debootstrap", "--variant=minbase", f"--cache-dir={cache}", f"--include={','.join(pkgs)}",
                   system.suite, str(root), mirror], progress=_debootstrap_progress, timeout=1800,
                  note="debootstrap: minimal Debian (package cache kept between runs)")
    archives = root / "var/cache/apt/archives"
    stack.bind(apt_cache, archives)
    try:
        runner.change(["apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_AFTER], root=root, timeout=1200,
                      note="dracut replaces initramfs-tools and builds a systemd initrd")
    finally:
        stack.unmount(archives)
    return BootstrapResult("debian", pkgs + DEBIAN_AFTER, mirror, cache=str(cache))


def _arch(runner: Runner, root: Path, system) -> BootstrapResult:
    pkgs = arch_packages(system)
    mirror = "host pacman mirrorlist" if system.mirror == "auto" else system.mirror
    if system.mirror != "auto":
        runner.write_file(root / "etc/pacman.d/mirrorlist", f"Server = {system.mirror}\n")
    # -K: a fresh pacman keyring in the target; the host's package cache is used (-c) so a
    # rerun from the same live system downloads nothing twice
    runner.change(["pacstrap", "-K", "-c", str(root), *pkgs], timeout=3600,
                  note="pacstrap: the blueprint's minimal Arch base (section 2.1 step 4)")
    return BootstrapResult("arch", pkgs, mirror, cache="/var/cache/pacman/pkg (host)")


def _debootstrap_progress(line: str):
    # "I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking", "I: Configuring": coarse stages
    for i, stage in enumerate(["Retrieving", "Validating", "Extracting", "Installing core", "Unpacking",
                               "Configuring", "Base system installed"]):
        if line.startswith(f"I: {stage}"):
            return round((i + 1) / 8, 2)
    return None
