"""The target of the install phases (a disk image file or a real disk), as phases 02, 03 and 06 share it.

* :func:`open_target`: the parameters' ``target`` section as a :class:`TargetSpec` (what, where,
  the partition layout); it never changes during a run.
* :class:`Attached`, :func:`attach`, :func:`release`: the loop device, the block devices and the
  mounts a phase holds on the target, always released (also after an error).
* :func:`mounted`: an existing target attached and mounted, for later phases' work in its root::

      spec = target.open_target(run)
      with target.mounted(run.runner, spec) as m:          # root mounted, the ESP's files at m.root/efi
          run.runner.change(["apt-get", "install", "-y", "foo"], root=m.root)
          target.add_guest_check(run.runner, m, "service", "#!/bin/sh\\necho AIOS-CHECK svc=...\\n")
      image.verify(run, image.start(run), extra={"svc": "active"})   # boot again; extra rows must match

* :class:`Manifest`: the JSON next to an image that says what built it (key, complete, ...).
* :func:`cached_image`, :func:`restore_image`, :func:`publish_image`: verified images in the build
  cache (``~/.cache/synapse/<kind>/<key>/disk.img``), through :func:`aios_lib.core.cache.publish`.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import bootloader, sysconfig
from .disk import Devices, Layout, MountStack, mount_dir_for, partition_path, release_stale, vfat_available
from ..core import cache
from ..core.paths import resolve_in_project
from ..core.runner import Runner
from ..params import ParamsError

#: the manifest of phase 02's image, next to it: ``<image>.synapse.json``
BASE_MANIFEST = ".synapse.json"
#: the image file inside a cache entry
IMAGE_FILE = "disk.img"


@dataclass(frozen=True)
class TargetSpec:
    """What the parameters name as the target; fixed for the run."""

    kind: str  # image | disk
    what: str  # the path a confirmation must repeat (and the runner's guard compares)
    image: Path | None  # the image file (kind image)
    disk: str | None  # the disk's stable path (kind disk)
    mount_dir: Path  # where its root is mounted while a phase works on it
    layout: Layout

    @property
    def root(self) -> Path:
        return self.mount_dir

    @property
    def device(self) -> str:
        """What QEMU boots and parted reads: the image file, or the disk's kernel name."""
        return str(self.image) if self.image else os.path.realpath(self.disk)


def open_target(run) -> TargetSpec:
    """The target of ``run``'s parameters; ``target.kind: none`` is refused (nothing to write)."""
    p = run.params
    t = p.target
    if t.kind == "none":
        raise ParamsError([f"{p.source_file or 'parameters'}: target.kind is 'none': phase 02 "
                           "writes a disk or an image; set target.kind to image (see parameters/image-debian.yaml) "
                           "or disk"])
    s = p.system
    return TargetSpec(kind=t.kind, what=t.what, image=resolve_in_project(t.image) if t.kind == "image" else None,
                      disk=t.device if t.kind == "disk" else None, mount_dir=mount_dir_for(t.what),
                      layout=Layout(esp_mib=s.esp_size_mib, root_fs=s.filesystem, root_mib=s.root_size_mib))


# ---- attach, mount, release ------------------------------------------------------------------
@dataclass
class Attached:
    """What a phase holds on the target: the mount stack (loop device and mounts) and the devices."""

    spec: TargetSpec
    stack: MountStack | None = None
    devices: Devices | None = None

    @property
    def root(self) -> Path:
        return self.spec.root


def attach(runner: Runner, att: Attached) -> Devices:
    """The target's block devices (an image is attached to a loop device first); once per hold."""
    if att.devices is not None:
        return att.devices
    if att.stack is None:
        att.stack = MountStack(runner)
    spec = att.spec
    if spec.image:
        loop = att.stack.attach(spec.image)
        att.devices = Devices(loop, partition_path(loop, 1), partition_path(loop, 2), spec.what, loop)
    else:
        dev = os.path.realpath(spec.disk)
        att.devices = Devices(dev, partition_path(dev, 1), partition_path(dev, 2), spec.what)
    return att.devices


def release(att: Attached) -> list[str]:
    """Unmount and detach whatever ``att`` holds (idempotent); what was released."""
    out = []
    if att.stack is not None:
        try:
            out = att.stack.close()
        except RuntimeError as e:
            out = [str(e)]
    att.stack, att.devices = None, None
    return out


def mount_esp(runner: Runner, att: Attached, staged: bool) -> str:
    """The ESP at ``root/efi``: the FAT partition itself, or (``staged``: this kernel cannot mount
    FAT) a tmpfs that mtools copies onto the partition later. Says which."""
    d = attach(runner, att)
    if staged:
        # bootctl wants a mount point; a tmpfs is one, and mtools copies it onto the FAT later
        att.stack.mount("synapse-esp", att.root / "efi", fstype="tmpfs", options="size=512M,mode=0700")
        return "ESP staged in a tmpfs at /efi (this kernel has no vfat driver: mtools copies it in later)"
    att.stack.mount(d.esp, att.root / "efi", fstype="vfat", options="fmask=0077,dmask=0077")
    return f"ESP {d.esp} mounted at /efi"


@contextlib.contextmanager
def mounted(runner: Runner, spec: TargetSpec, esp: bool = True, write_back: bool = True) -> Iterator[Attached]:
    """Attach and mount an existing target; yields the :class:`Attached` (``.root``, ``.devices``,
    ``.stack`` for more mounts).

    With ``esp``, the ESP's files are at ``root/efi`` (mounted when vfat works, else copied into a
    tmpfs and, with ``write_back``, copied back onto the FAT partition on exit). Everything is
    released on exit, also after an exception.
    """
    if spec.image and not spec.image.exists() and not runner.plan:
        raise FileNotFoundError(f"{spec.image} does not exist: build it first (phase 02)")
    # what a killed run left mounted or attached goes first (mounting over it would stack mounts)
    release_stale(runner, str(spec.image) if spec.image else None, spec.mount_dir)
    att = Attached(spec)
    try:
        d = attach(runner, att)
        att.stack.mount(d.root, spec.root)
        staged = False
        if esp:
            staged = not vfat_available(runner)
            mount_esp(runner, att, staged)
            if staged:
                runner.change(["mcopy", "-s", "-n", "-Q", "-i", d.esp, "::/*", str(spec.root / "efi")],
                              env={"MTOOLS_SKIP_CHECK": "1"}, note="ESP contents into the staging tmpfs")
        yield att
        if staged and write_back:
            bootloader.copy_staged_esp(runner, spec.root / "efi", d.esp, spec.what)
    finally:
        release(att)


def add_guest_check(runner: Runner, att: Attached, name: str, script: str) -> None:
    """Install an extra check script into a mounted target (it prints ``AIOS-CHECK key=value``
    lines; the verification boot reports them): call inside :func:`mounted`."""
    if att.stack is None or att.devices is None:
        raise RuntimeError("add_guest_check needs the target mounted (inside target.mounted())")
    sysconfig.install_guest_check(runner, att.root, {name: script})


# ---- the manifest next to an image -----------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """``<image><suffix>``: JSON that says what built the image (``key``, ``complete`` ...).

    Read as {} when it or the image is missing or unreadable; written through the runner."""

    image: Path
    suffix: str = BASE_MANIFEST

    @property
    def path(self) -> Path:
        return self.image.with_name(self.image.name + self.suffix)

    def read(self) -> dict:
        if not (self.path.exists() and self.image.exists()):
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError:
            return {}

    def write(self, runner: Runner, values: dict, fresh: bool = False) -> dict:
        """Merge ``values`` into the manifest (or start a ``fresh`` one), stamped with the time."""
        m = {**({} if fresh else self.read()), **values, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        runner.write_file(self.path, json.dumps(m, indent=2) + "\n", note="build manifest")
        return m


def read_manifest(spec: TargetSpec) -> dict:
    """Phase 02's manifest of the target ({} for a disk, which has none)."""
    return Manifest(spec.image).read() if spec.image else {}


def write_manifest(runner: Runner, spec: TargetSpec, **kv) -> None:
    """Add ``kv`` to phase 02's manifest of the target (nothing for a disk)."""
    if spec.image:
        Manifest(spec.image).write(runner, kv)


# ---- verified images in the build cache ------------------------------------------------------
def cached_image(kind: str, key: str) -> Path | None:
    """The verified image of ``kind`` with build key ``key`` in the cache, if a complete one is there."""
    entry = cache.Entry(kind, key)
    path = entry.path / IMAGE_FILE
    return path if entry.complete() and path.is_file() else None


def cached_info(kind: str, key: str) -> dict:
    """What was recorded with the cached image (its manifest when it was stored)."""
    return cache.Entry(kind, key).info()


def restore_image(runner: Runner, spec: TargetSpec, cached: Path, note: str) -> None:
    """Copy a cached image to the target's image file (sparse; a destructive write of the target).

    The image's manifests go first: until the caller writes the new one, nothing says the file is
    whole, so a copy cut off by a kill is never taken for a finished image."""
    runner.change(["mkdir", "-p", str(spec.image.parent)], quiet=True)
    stale = sorted(str(m) for m in (spec.image.parent.iterdir() if spec.image.parent.is_dir() else [])
                   if m.name.startswith(spec.image.name + ".synapse") and m.name.endswith(".json"))
    if stale:
        runner.change(["rm", "-f", *stale], note="the image is about to be replaced: its manifests no longer describe it")
    runner.destructive(["cp", "--sparse=always", str(cached), str(spec.image)], device=spec.what, note=note)


def publish_image(runner: Runner, image: Path, kind: str, key: str, info: dict, keep: int = 2) -> Path:
    """Store a verified image as the cache entry ``<kind>/<key>`` (newest ``keep`` of the kind kept)."""
    return cache.publish(runner, image, cache.Entry(kind, key), info, keep=keep, name=IMAGE_FILE)
