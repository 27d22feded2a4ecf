"""Disks and disk images: safety checks, GPT partitioning, filesystems, loop devices, mounts.

Everything that writes the target goes through ``runner.destructive(argv, device=<target.what>)``
so the runner refuses it unless ``target.confirm`` repeats the image path or the disk's stable
path exactly. Attaching and mounting go through :class:`MountStack`, a context manager that
unmounts and detaches in reverse order whatever happens (exceptions, Ctrl-C), so an interrupted
run leaves nothing mounted or attached; :func:`release_stale` cleans up after a run that was
killed outright (SIGKILL skips ``finally``).

Quirks of machines like the development box, handled here:

* ``losetup -P`` creates no partition nodes (no udev, or a kernel without GPT support):
  ``partx -a`` adds them.
* no vfat driver: the ESP cannot be mounted; :func:`vfat_available` says so and the bootloader
  step stages the ESP in a tmpfs and copies it in with mtools.
* no udev: ``lsblk``/``/dev/disk/by-uuid`` show no UUIDs; :func:`read_uuids` asks ``blkid``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.runner import Runner
from ..facts import blockdev, boot
from ..facts.base import gather


class DiskRefused(PermissionError):
    """The target disk is in use (mounted, swap, or holds the running system); nothing ran."""


# ---- naming ----------------------------------------------------------------------------------
def partition_path(disk: str, n: int) -> str:
    """Kernel naming: /dev/loop0 -> /dev/loop0p1, /dev/nvme0n1 -> /dev/nvme0n1p1, /dev/sda -> /dev/sda1;
    stable names: /dev/disk/by-id/X -> /dev/disk/by-id/X-part1."""
    if "/by-id/" in disk or "/by-path/" in disk:
        return f"{disk}-part{n}"
    return f"{disk}p{n}" if disk[-1].isdigit() or disk.endswith(">") else f"{disk}{n}"


@dataclass
class Layout:
    """GPT: partition 1 the ESP (FAT32), partition 2 the root filesystem."""

    esp_mib: int = 512
    root_fs: str = "xfs"
    #: None: the root takes the rest of the disk; else its size (free space follows it)
    root_mib: int | None = None
    esp_label: str = "ESP"
    root_label: str = "synapse-root"

    def parted_argv(self, disk: str) -> list[str]:
        end = 1 + self.esp_mib
        return ["parted", "-s", "-a", "optimal", disk, "--",
                "mklabel", "gpt",
                "mkpart", "ESP", "fat32", "1MiB", f"{end}MiB", "set", "1", "esp", "on",
                "mkpart", "root", self.root_fs, f"{end}MiB", f"{end + self.root_mib}MiB" if self.root_mib else "100%"]

    def mkfs_esp_argv(self, part: str) -> list[str]:
        return ["mkfs.fat", "-F", "32", "-n", self.esp_label, part]

    def mkfs_root_argv(self, part: str) -> list[str]:
        if self.root_fs == "xfs":
            return ["mkfs.xfs", "-f", "-L", self.root_label, part]
        if self.root_fs == "ext4":
            return ["mkfs.ext4", "-F", "-q", "-L", self.root_label, part]
        raise ValueError(f"unsupported root filesystem {self.root_fs!r}")


@dataclass
class Devices:
    """The block devices of an attached target."""

    disk: str  # /dev/loopN or the kernel name of the real disk
    esp: str
    root: str
    what: str  # target.what: what confirmations name
    loop: str | None = None


# ---- safety ----------------------------------------------------------------------------------
def check_disk(runner: Runner, device: str) -> dict:
    """Refuse (DiskRefused) a disk that is mounted, used as swap, or holds the running system.

    Read-only; runs in plan mode too. A device that does not exist on this machine (planning
    for another box) is reported, not refused: the real run checks again on the real machine.
    """
    real = os.path.realpath(device)
    info = {"device": device, "kernel_name": real, "present": Path(real).exists(), "in_use": []}
    if not info["present"]:
        info["note"] = f"{device} is not present on this machine: the real run checks it there"
        return info
    use = gather(runner, blockdev.disk_in_use(real))
    reasons = use["reasons"]
    root_src = gather(runner, blockdev.ROOT_SOURCE)
    if root_src.startswith("/dev/"):
        root_disk = gather(runner, blockdev.disk_holding(root_src))
        if root_disk and Path(real).name == root_disk:
            reasons.append(f"{device} holds the running system (/ is {root_src})")
    info["in_use"] = reasons
    if use["lsblk"] is not None:
        info["lsblk"] = use["lsblk"]
    if reasons:
        raise DiskRefused(f"refused: {device} is in use: " + "; ".join(reasons)
                          + ". Unmount it (or pick another disk) and rerun")
    return info


# ---- loop devices and mounts -----------------------------------------------------------------
def mount_dir_for(what: str) -> Path:
    """Where a target is mounted while the phase works on it (one per target)."""
    key = hashlib.sha256(str(what).encode()).hexdigest()[:10]
    return Path(os.environ.get("AIOS_MOUNT_BASE", "/run/synapse")) / f"target-{key}"


def release_stale(runner: Runner, image: str | None, mount_dir: Path) -> list[str]:
    """Unmount anything under ``mount_dir`` and detach loop devices of ``image`` left by a killed run.

    Returns what was released (empty when the target was clean). Planned in plan mode.
    """
    done = []
    for t in gather(runner, blockdev.mount_targets(str(mount_dir))):
        runner.change(["umount", "-l", t], check=False, note="left mounted by an interrupted run")
        done.append(f"unmounted {t}")
    if image and Path(image).exists():
        for loop in gather(runner, blockdev.loops_of(str(image))):
            runner.change(["partx", "-d", loop], check=False, quiet=True)
            runner.change(["losetup", "-d", loop], check=False, note="left attached by an interrupted run")
            done.append(f"detached {loop}")
    return done


@dataclass
class MountStack:
    """Attach, mount and always undo, in reverse order.

    ``with MountStack(runner) as ms: loop = ms.attach(img); ms.mount(dev, dir)`` leaves nothing
    mounted or attached when the block ends, however it ends. :meth:`close` is idempotent.
    """

    runner: Runner
    items: list[tuple[str, str]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def __enter__(self) -> "MountStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def attach(self, image: str | os.PathLike) -> str:
        """Attach ``image`` to a free loop device with partition scanning; add the partition nodes
        with ``partx -a`` when the kernel created none. Returns /dev/loopN."""
        r = self.runner.change(["losetup", "-f", "--show", "-P", str(image)])
        loop = r.stdout.strip() if not r.planned else "/dev/loop<N>"
        self.items.append(("loop", loop))
        if not r.planned and not Path(partition_path(loop, 1)).exists():
            # no partition nodes: kernel without GPT support or no udev (this development machine)
            self.runner.change(["partx", "-a", loop], check=False,
                               note="losetup -P made no partition nodes: adding them with partx")
        elif r.planned:
            self.runner.change(["partx", "-a", loop], check=False, note="only when losetup -P made no partition nodes")
        return loop

    def rescan(self, loop: str) -> None:
        """After repartitioning an attached loop device: make the new partition nodes exist."""
        self.runner.change(["partx", "-d", loop], check=False, quiet=True)
        self.runner.change(["partx", "-a", loop], check=False)

    def mkdir(self, path: Path) -> None:
        self.runner.change(["mkdir", "-p", str(path)], quiet=True)

    def mount(self, source: str, target: str | os.PathLike, fstype: str | None = None,
              options: str | None = None) -> None:
        self.mkdir(Path(target))
        argv = ["mount"] + (["-t", fstype] if fstype else []) + (["-o", options] if options else []) + [source, str(target)]
        self.runner.change(argv)
        self.items.append(("mount", str(target)))

    def bind(self, source: str | os.PathLike, target: str | os.PathLike) -> None:
        self.mount(str(source), target, options="bind")

    def unmount(self, target: str | os.PathLike) -> None:
        """Unmount one mount point early (it is then no longer undone at the end)."""
        t = str(target)
        if ("mount", t) in self.items:
            self.items.remove(("mount", t))
            self.runner.change(["umount", t])
            self.released.append(f"unmounted {t}")

    def close(self) -> list[str]:
        errors = []
        while self.items:
            kind, what = self.items.pop()
            if kind == "mount":
                r = self.runner.change(["umount", what], check=False)
                if not r.ok:  # busy (a process left in the chroot): lazy unmount still frees it
                    r = self.runner.change(["umount", "-l", what], check=False)
            else:
                self.runner.change(["partx", "-d", what], check=False, quiet=True)
                r = self.runner.change(["losetup", "-d", what], check=False)
            (self.released if r.ok else errors).append(f"{'unmounted' if kind == 'mount' else 'detached'} {what}")
        if errors:
            raise RuntimeError("could not release: " + ", ".join(errors))
        return self.released


# ---- facts about the target ------------------------------------------------------------------
def vfat_available(runner: Runner) -> bool:
    """Can this kernel mount FAT? (No on the development machine: the ESP is then staged.)"""
    return gather(runner, boot.VFAT)


def read_uuids(runner: Runner, devices: Devices) -> dict[str, dict[str, str]]:
    """UUID/PARTUUID/TYPE of the ESP and root straight from the devices (``blkid -p`` reads the
    superblock itself, so it works without udev). Planned placeholders in plan mode."""
    out = {}
    for name, dev in (("esp", devices.esp), ("root", devices.root)):
        vals = gather(runner, blockdev.blkid(dev))
        out[name] = vals or {"UUID": f"<{name}-uuid>", "PARTUUID": f"<{name}-partuuid>", "TYPE": "?"}
    return out
