"""Phase 2: install the base system onto a disk or a disk image, and prove it boots.

One :class:`Target` per run; its methods are the blueprint's steps, in order, and each returns
something that displays itself in the notebook::

    t = open_target(run)        # parameters -> target (image file or real disk)
    t.validate()                # mount options, kernel command line, target: errors before anything runs
    t.prepare()                 # safety (disk in use?), leftovers of a killed run, skip / cache / build
    t.partition()               # GPT: ESP + root            (destructive: needs target.confirm)
    t.format()                  # FAT32 + XFS/ext4           (destructive)
    t.mount()                   # root, ESP (or a staged ESP when this kernel has no vfat)
    t.bootstrap()               # debootstrap / pacstrap + dracut
    t.configure()               # fstab, hostname, units, journald, zram, THP, sysctl: requested vs in effect
    t.install_bootloader()      # systemd-boot, BLS entry, loader.conf
    t.finish()                  # clean, trim, copy the staged ESP in, unmount, detach
    t.verify()                  # QEMU boot + guest self-check: requested vs in effect

:func:`build` runs them all. If a step fails, everything mounted or attached so far is released
before the error propagates, and the error says how to resume. A rerun with identical inputs
skips the build ("up to date"), or copies a verified image from the cache; otherwise it rebuilds
from scratch, and says which.

Later phases reuse an existing image::

    t = open_target(run)                         # same parameters (target.kind: image)
    with t.mounted() as root:                    # root mounted, ESP contents staged at root/efi
        run.runner.change(["apt-get", "install", "-y", "foo"], root=root)   # chroot work
        t.add_guest_check("service", "#!/bin/sh\\necho AIOS-CHECK svc=$(systemctl is-active x)\\n")
    t.verify(extra={"svc": "active"})            # boot again; extra rows must match

``mounted()`` copies the ESP back (mtools) and unmounts/detaches on exit. ``vm.boot`` and
``vm.boot_kernel`` boot anything else.

Notes for later phases:

* a custom kernel (phase 3): inside ``mounted()``, install it (``dpkg -i`` of a linux-image
  package, or modules + ``kernel-install add <kver> <vmlinuz>`` in the chroot): the entry gets
  the same ``/etc/kernel/cmdline``. ``t.verify(extra={"kernel": "<kver>"})`` checks it booted.
* more partitions (phase 6's ``/var/ai-data``): set ``system.root_size_mib`` so the root leaves
  free space, add the partition with ``parted`` through ``runner.destructive(..., device=t.what)``
  and ``MountStack.rescan(loop)``; ``t.devices`` names ESP and root.
* another boot entry (phase 6's ``systemd.volatile=overlay``): write it under ``root/efi/loader/entries``
  inside ``mounted()``; ``bootloader.loader_conf()`` renders loader.conf; ``vm.boot(..., expect=...)``
  compares a boot against any :class:`vm.Expectation`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import bootloader, bootstrap as bootstrap_mod, sysconfig, vm
from .cmdline import Cmdline, CmdlineError, build_cmdline
from ..context import Run
from .disk import (Devices, DiskRefused, Layout, MountStack, check_disk, mount_dir_for, partition_path,
                   read_uuids, release_stale, vfat_available)
from ..params.mount_options import MountOptionError, normalise_mount_options
from ..params import ParamsError
from ..core.paths import PACKAGE_DIR, cache_dir, resolve_in_project
from ..settings import settings_table

#: source files whose content decides what an image contains (part of the cache key)
BUILD_SOURCES = ["system/image.py", "system/disk.py", "system/bootstrap.py", "system/sysconfig.py",
                 "system/bootloader.py", "system/cmdline.py", "params/mount_options.py", "settings/base.py", "settings/_conf.py", "settings/units.py", "settings/sysctl.py",
                 "settings/thp.py", "settings/zram.py", "settings/journald.py", "settings/rootfiles.py",
                 "data/guest-check.sh"]
STEPS = ["partition", "format", "mount", "bootstrap", "configure", "install_bootloader", "finish"]


class PhaseFailed(RuntimeError):
    """A step failed; everything was released; the message says how to resume."""


@dataclass
class StepResult:
    step: str
    status: str  # done | planned | skipped
    detail: str = ""
    commands: list = field(default_factory=list)
    data: Any = None

    def _repr_markdown_(self) -> str:
        cmds = "\n".join(f"    $ {c.cmdline}" + ("   # planned" if c.planned else f"   # rc={c.rc}, {c.duration:.1f}s")
                         + (f"  ({c.note})" if c.note else "") for c in self.commands)
        return f"**{self.step}: {self.status}**. {self.detail}\n\n" + (f"```\n{cmds}\n```" if cmds else "")


@dataclass
class Validation:
    target: str
    mount_options: list[str]
    cmdline: Cmdline
    warnings: list[str]
    key: str
    state: str  # new | up to date | stale | cached | disk

    def _repr_markdown_(self) -> str:
        w = "".join(f"\n- **warning:** {x}" for x in self.warnings)
        return (f"target: `{self.target}`\n\n- root mount options: `{','.join(self.mount_options)}`\n"
                f"- kernel command line: `{self.cmdline}`\n- build key `{self.key}`: {self.state}{w}")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def build_key(params) -> str:
    """Hash of everything that decides the image's content (parameters + build code)."""
    s = params.system.model_dump(mode="json", exclude={"verify_boot", "boot_timeout_s", "use_image_cache"})
    code = {f: hashlib.sha256((PACKAGE_DIR / f).read_bytes()).hexdigest() for f in BUILD_SOURCES
            if (PACKAGE_DIR / f).exists()}
    return _digest({"system": s, "size": params.target.image_size, "trusted": params.machine.trusted_offline,
                    "code": code})[:16]


class Target:
    """The phase's target (see the module docstring). Build one with :func:`open_target`."""

    def __init__(self, run: Run):
        self.run = run
        self.params = run.params
        self.runner = run.runner
        self.system = run.params.system
        t = run.params.target
        if t.kind == "none":
            raise ParamsError([f"{run.params.source_file or 'parameters'}: target.kind is 'none': phase 02 "
                               "writes a disk or an image; set target.kind to image (see parameters/image-debian.yaml) "
                               "or disk"])
        self.kind = t.kind
        self.what = t.what  # what confirmations name (and the runner's guard compares)
        self.image = resolve_in_project(t.image) if t.kind == "image" else None
        self.disk = t.device if t.kind == "disk" else None
        self.mount_dir = mount_dir_for(self.what)
        self.layout = Layout(esp_mib=self.system.esp_size_mib, root_fs=self.system.filesystem,
                             root_mib=self.system.root_size_mib)
        self.stack: MountStack | None = None
        self.devices: Devices | None = None
        self.kver: str | None = None
        self.staged_esp = True
        self.validation: Validation | None = None
        self.skip_build = False
        self.cache_hit: Path | None = None
        self.settings_rows = None
        self.boot_result = None
        self.cmdline: Cmdline | None = None
        self.fstab = None
        self.extra_checks: dict[str, str] = {}

    # ---- helpers -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.mount_dir

    @property
    def manifest_path(self) -> Path | None:
        return self.image.with_name(self.image.name + ".synapse.json") if self.image else None

    def manifest(self) -> dict:
        p = self.manifest_path
        if p and p.exists() and self.image.exists():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return {}
        return {}

    def _write_manifest(self, **kv) -> None:
        if self.manifest_path:
            m = {**self.manifest(), **kv, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self.runner.write_file(self.manifest_path, json.dumps(m, indent=2) + "\n", note="build manifest")

    def _destroy(self, argv: list[str], **kw):
        return self.runner.destructive(argv, device=self.what, **kw)

    def _step(self, name: str, fn: Callable[[], tuple[str, Any]]) -> StepResult:
        if self.skip_build and name in STEPS:
            why = "from the verified cache" if self.cache_hit else "the image is up to date (same inputs)"
            return StepResult(name, "skipped", why)
        start = len(self.runner.history)
        try:
            detail, data = fn()
        except BaseException as e:
            released = self.release()
            where = "" if not released else f" Released: {', '.join(released)}."
            resume = (f"Nothing is left mounted or attached.{where} To resume, fix the cause and rerun "
                      f"`aios run 02 --params {self.params.source_file or '<file>'}`: the build restarts from the "
                      "partitioning step (a half-built image is never reused; cached packages are)")
            if isinstance(e, (ParamsError, DiskRefused, KeyboardInterrupt)) or type(e).__name__ == "DestructiveRefused":
                raise
            raise PhaseFailed(f"step {name} failed: {e}\n{resume}") from e
        cmds = [c for c in self.runner.history[start:] if c.kind != "probe"]
        status = "planned" if self.runner.plan else "done"
        self.run.record(f"step.{name}", {"status": status, "detail": detail})
        return StepResult(name, status, detail, cmds, data)

    def release(self) -> list[str]:
        """Unmount and detach whatever this target holds (idempotent)."""
        out = []
        if self.stack is not None:
            try:
                out = self.stack.close()
            except RuntimeError as e:
                out = [str(e)]
            self.stack = None
        return out

    # ---- steps ---------------------------------------------------------------------------
    def validate(self) -> Validation:
        """Check the parameters against each other before anything runs (one-line errors)."""
        src = self.params.source_file or "parameters"
        warnings: list[str] = []
        try:
            opts, w = normalise_mount_options(self.system.filesystem, self.system.mount_options)
            warnings += w
        except MountOptionError as e:
            raise ParamsError([f"{src}: key `system.mount_options`: {e}"]) from None
        try:
            self.cmdline = build_cmdline(self.params, "PARTUUID=<root-partuuid>")
        except CmdlineError as e:
            raise ParamsError([f"{src}: {e}"]) from None
        warnings += self.cmdline.warnings
        if self.kind == "disk" and not self.disk.startswith("/dev/disk/by-id/"):
            raise ParamsError([f"{src}: key `target.device`: {self.disk!r} is not a stable name; name the disk "
                               "by /dev/disk/by-id/... so the confirmation cannot point at another disk after a reboot"])
        if not self.params.target.confirmed:
            warnings.append(f"target.confirm does not repeat {self.what!r}: destructive steps will be refused"
                            + (" (plan mode lists them)" if self.runner.plan else ""))
        key = build_key(self.params)
        state = "disk (always rebuilt)"
        if self.image:
            m = self.manifest()
            if m.get("key") == key and m.get("complete"):
                state = "up to date (a rerun skips the build)"
            elif self.system.use_image_cache and self._cached(key):
                state = "in the verified cache (copied, not rebuilt)"
            elif m:
                state = "stale or incomplete: rebuilt from scratch"
            else:
                state = "new"
        self.validation = Validation(self.what, opts, self.cmdline, warnings, key, state)
        self.run.record("validation", {"target": self.what, "kind": self.kind, "mount_options": opts,
                                       "cmdline": str(self.cmdline), "warnings": warnings, "key": key, "state": state})
        return self.validation

    def _cached(self, key: str) -> Path | None:
        p = cache_dir("base-image") / f"{key}.img"
        return p if p.exists() else None

    def prepare(self, force: bool = False) -> StepResult:
        """Release leftovers of a killed run, refuse a disk in use, decide skip / cache / build."""
        if self.validation is None:
            self.validate()

        def go():
            released = release_stale(self.runner, str(self.image) if self.image else None, self.mount_dir)
            notes = [f"released leftovers of an interrupted run: {', '.join(released)}"] if released else []
            if self.kind == "disk":
                info = check_disk(self.runner, self.disk)
                notes.append(info.get("note") or f"{self.disk} ({info['kernel_name']}) is not in use")
                self.run.record("disk", info)
                return "; ".join(notes) + ". Building from scratch.", info
            key = self.validation.key
            m = self.manifest()
            if not force and m.get("key") == key and m.get("complete"):
                self.skip_build = True
                return "; ".join(notes + [f"{self.image} is up to date (build key {key}): build steps skipped"]), m
            cached = self._cached(key) if self.system.use_image_cache and not force else None
            if cached:
                self.runner.change(["mkdir", "-p", str(self.image.parent)], quiet=True)
                self._destroy(["cp", "--sparse=always", str(cached), str(self.image)],
                              note="verified base image with identical inputs from the cache")
                self.skip_build, self.cache_hit = True, cached
                meta = cached.with_suffix(".json")
                info = json.loads(meta.read_text()) if meta.exists() else {}
                self._write_manifest(key=key, complete=True, from_cache=str(cached), masked=info.get("masked"))
                return "; ".join(notes + [f"copied the verified image {cached.name} from the cache: build steps skipped"]), None
            what = "rebuilt from scratch (inputs changed or last build incomplete)" if m else "built from scratch"
            return "; ".join(notes + [f"{self.image} will be {what}"]), None

        return self._step("prepare", go)

    def partition(self) -> StepResult:
        def go():
            if self.image:
                self.runner.change(["mkdir", "-p", str(self.image.parent)], quiet=True)
                self._destroy(["truncate", "-s", "0", str(self.image)], note="start from an empty file")
                self._destroy(["truncate", "-s", self.params.target.image_size, str(self.image)])
                self._write_manifest(key=self.validation.key if self.validation else None, complete=False)
                self._destroy(self.layout.parted_argv(str(self.image)))
            else:
                dev = os.path.realpath(self.disk)
                self._destroy(["wipefs", "-a", dev], note="old signatures off")
                self._destroy(self.layout.parted_argv(dev))
                self.runner.change(["partx", "-u", dev], check=False)
                self.runner.probe(["udevadm", "settle"], check=False, quiet=True)
                if not self.runner.plan and not Path(partition_path(dev, 1)).exists():
                    # no udev / no GPT support in this kernel: add the partition nodes ourselves
                    self.runner.change(["partx", "-a", dev], check=False)
            out = self.runner.probe(["parted", "-s", str(self.image or os.path.realpath(self.disk)), "unit", "MiB", "print"],
                                    check=False, quiet=True)
            return f"GPT: ESP {self.layout.esp_mib} MiB FAT32 + root {self.layout.root_fs}", out.stdout

        return self._step("partition", go)

    def _attach(self) -> Devices:
        if self.devices is not None:
            return self.devices
        if self.stack is None:
            self.stack = MountStack(self.runner)
        if self.image:
            loop = self.stack.attach(self.image)
            self.devices = Devices(loop, partition_path(loop, 1), partition_path(loop, 2), self.what, loop)
        else:
            dev = os.path.realpath(self.disk)
            self.devices = Devices(dev, partition_path(dev, 1), partition_path(dev, 2), self.what)
        return self.devices

    def format(self) -> StepResult:
        def go():
            d = self._attach()
            self._destroy(self.layout.mkfs_esp_argv(d.esp))
            self._destroy(self.layout.mkfs_root_argv(d.root))
            uuids = read_uuids(self.runner, d)
            return (f"{d.esp} FAT32 (UUID {uuids['esp'].get('UUID')}), {d.root} {self.layout.root_fs} "
                    f"(UUID {uuids['root'].get('UUID')})"), uuids

        return self._step("format", go)

    def mount(self) -> StepResult:
        def go():
            d = self._attach()
            opts = ",".join(self.validation.mount_options if self.validation else self.system.mount_options)
            self.stack.mount(d.root, self.root, options=opts or None)
            self.staged_esp = not vfat_available(self.runner)
            if self.staged_esp:
                # bootctl wants a mount point; a tmpfs is one, and mtools copies it onto the FAT later
                self.stack.mount("synapse-esp", self.root / "efi", fstype="tmpfs", options="size=512M,mode=0700")
                how = "ESP staged in a tmpfs at /efi (this kernel has no vfat driver: mtools copies it in later)"
            else:
                self.stack.mount(d.esp, self.root / "efi", fstype="vfat", options="fmask=0077,dmask=0077")
                how = f"ESP {d.esp} mounted at /efi"
            return f"{d.root} on {self.root} ({opts}); {how}", None

        return self._step("mount", go)

    def bootstrap(self) -> StepResult:
        def go():
            res = bootstrap_mod.bootstrap(self.runner, self.root, self.system, self.stack)
            self.kver = res.kernel
            self.run.record("bootstrap", {"distro": res.distro, "packages": res.packages, "mirror": res.mirror,
                                          "kernel": res.kernel, "cache": res.cache})
            return f"{res.distro}: {len(res.packages)} packages from {res.mirror}; kernel {res.kernel or '(planned)'}", res

        return self._step("bootstrap", go)

    def configure(self) -> StepResult:
        def go():
            d = self._attach()
            self.fstab = sysconfig.plan_fstab(self.runner, self.root, d, self.system.filesystem,
                                              self.system.mount_options)
            rows = sysconfig.configure(self.runner, self.root, self.system, self.fstab)
            sysconfig.install_guest_check(self.runner, self.root, self.extra_checks)
            self.settings_rows = rows
            masked = next((r for r in rows if r.name == "masked units"), None)
            self.run.record("settings", [r.__dict__ for r in rows])
            self.run.record("masked_units", masked.requested if masked else [])
            self._write_manifest(masked=masked.requested if masked else [])
            bad = [r.name for r in rows if not r.ok]
            if bad:
                raise RuntimeError(f"settings not in effect after applying: {', '.join(bad)}")
            return f"fstab from {self.fstab.source}; {len(rows)} settings applied and read back", settings_table(rows)

        return self._step("configure", go)

    def install_bootloader(self) -> StepResult:
        def go():
            d = self._attach()
            uuids = read_uuids(self.runner, d)
            self.cmdline = build_cmdline(self.params, f"PARTUUID={uuids['root'].get('PARTUUID')}")
            self.kver = self.kver or bootstrap_mod.kernel_version(self.runner, self.root)
            res = bootloader.install(self.runner, self.root, self.cmdline, self.kver, self.system.distro)
            self.run.record("bootloader", {"cmdline": res.cmdline, "entry": res.entry, "loader_conf": res.loader_conf,
                                           "esp_files": res.esp_files, "warnings": res.warnings, "checks": res.checks})
            if not res.ok:
                bad = [c["item"] for c in res.checks if not c["ok"]]
                raise RuntimeError(f"boot loader read-back mismatch: {', '.join(bad)}")
            return f"systemd-boot + entry for {self.kver or '<kver>'}: `{self.cmdline}`", res

        return self._step("install_bootloader", go)

    def finish(self) -> StepResult:
        def go():
            d = self._attach()
            if self.system.distro == "debian":
                self.runner.change(["apt-get", "clean"], root=self.root)
            self.runner.change(["fstrim", "-v", str(self.root)], check=False, note="unused blocks back (smaller image)")
            if self.staged_esp:
                bootloader.copy_staged_esp(self.runner, self.root / "efi", d.esp, self.what)
            released = self.release()
            self.devices = None
            if self.image:
                self._write_manifest(key=self.validation.key if self.validation else None, complete=True)
            size = ""
            if self.image and self.image.exists() and not self.runner.plan:
                st = self.image.stat()
                size = f"; {self.image} {st.st_size / 2**30:.1f} GiB, {st.st_blocks * 512 / 2**20:.0f} MiB allocated"
            return f"released: {', '.join(released) or 'nothing'}{size}", None

        return self._step("finish", go)

    # ---- verification --------------------------------------------------------------------
    def expectation(self, extra: dict[str, str] | None = None,
                    cmdline_extra: list[str] | None = None) -> vm.Expectation:
        """What the guest must report, from the parameters (and the record of the build)."""
        masked = self.run.recorded(self.run.phase, "masked_units", None)
        if masked is None:  # built in an earlier run (or copied from the cache): the manifest knows
            masked = self.manifest().get("masked")
        if masked is None:
            masked = list(self.system.mask_units)
        opts, _ = normalise_mount_options(self.system.filesystem, self.system.mount_options)
        return vm.Expectation(
            cmdline=_with_extra(self._expected_cmdline(), cmdline_extra or []), thp=self.system.thp, zram_algorithm=self.system.zram_algorithm,
            zram_size=self.system.zram_size, journal_volatile=self.system.journald.get("Storage") == "volatile",
            journal_runtime_max=self.system.journald.get("RuntimeMaxUse"), masked=list(masked),
            root_fstype=self.system.filesystem, root_options=opts, default_target=self.system.default_target,
            hostname=self.system.hostname, sysctl={k: str(v) for k, v in self.system.sysctl.items()},
            extra=dict(extra or {}))

    def _expected_cmdline(self) -> list[str]:
        if self.cmdline is not None and "<" not in str(self.cmdline):
            return str(self.cmdline).split()
        partuuid = "<root-partuuid>"
        if not self.runner.plan and self.image and self.image.exists():
            r = self.runner.probe(["sfdisk", "--part-uuid", str(self.image), "2"], check=False, quiet=True)
            partuuid = r.stdout.strip().lower() or partuuid
        return str(build_cmdline(self.params, f"PARTUUID={partuuid}")).split()

    def verify(self, extra: dict[str, str] | None = None, label: str = "verify",
               cmdline_extra: list[str] | None = None) -> vm.BootResult:
        """Boot the target in QEMU (snapshot: the image is not changed) and compare every row.

        ``extra`` adds rows (report key -> expected value) for checks added with
        :meth:`add_guest_check`; ``cmdline_extra`` what a later phase added to the boot entry's
        command line (phase 03's kernel entry). Raises :class:`PhaseFailed` on any mismatch.
        """
        if not self.system.verify_boot:
            res = vm.BootResult([], vm.Accel("-", "system.verify_boot is false"), None, 0.0, False, "", {}, planned=True)
            return res
        disk = str(self.image) if self.image else os.path.realpath(self.disk)
        exp = self.expectation(extra, cmdline_extra)
        res = vm.boot(self.runner, disk, timeout=self.system.boot_timeout_s, workdir=self.run.dir, label=label,
                      expect=exp)
        self.boot_result = res
        if not res.planned:
            self.run.record(label, {"accel": res.accel.__dict__, "seconds": round(res.seconds, 1), "rc": res.rc,
                                    "timed_out": res.timed_out, "report": res.report, "rows": res.rows,
                                    "serial_log": res.log, "report_log": res.report_log, "ok": res.ok})
            if not res.ok:
                bad = "; ".join(f"{r['check']}: requested {r['requested']!r}, in effect {r['in effect']!r}"
                                for r in res.mismatches)
                raise PhaseFailed(f"verification boot: {len(res.mismatches)} mismatch(es): {bad} "
                                  f"(serial log: {res.log})")
            if self.image:
                self._write_manifest(verified=True, verified_rows=len(res.rows))
                if label == "verify":
                    self.store_in_cache()
        return res

    def store_in_cache(self, keep: int = 2) -> Path | None:
        """Keep a verified image under ~/.cache/synapse/base-image/<key>.img (newest ``keep`` kept)."""
        if not (self.image and self.system.use_image_cache and self.validation) or self.cache_hit:
            return None
        d = cache_dir("base-image")
        dst = d / f"{self.validation.key}.img"
        if dst.exists():
            return dst
        tmp = d / f".{self.validation.key}.img.tmp"
        self.runner.work(["cp", "--sparse=always", str(self.image), str(tmp)], note="verified image into the cache")
        if not self.runner.plan:
            os.replace(tmp, dst)
            dst.with_suffix(".json").write_text(json.dumps(self.manifest(), indent=2))
            for old in sorted(d.glob("*.img"), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]:
                old.unlink()
                old.with_suffix(".json").unlink(missing_ok=True)
        return dst

    # ---- reuse by later phases -----------------------------------------------------------
    @contextlib.contextmanager
    def mounted(self, esp: bool = True, write_back: bool = True):
        """Attach and mount an existing target; yields the root path.

        With ``esp``, the ESP's files are at ``root/efi`` (mounted when vfat works, else copied
        into a tmpfs and, with ``write_back``, copied back onto the FAT partition on exit).
        Everything is released on exit, also after an exception.
        """
        if self.image and not self.image.exists() and not self.runner.plan:
            raise FileNotFoundError(f"{self.image} does not exist: build it first (phase 02)")
        self.stack = MountStack(self.runner)
        self.devices = None
        try:
            d = self._attach()
            self.stack.mount(d.root, self.root)
            staged = False
            if esp:
                if vfat_available(self.runner):
                    self.stack.mount(d.esp, self.root / "efi", fstype="vfat", options="fmask=0077,dmask=0077")
                else:
                    staged = True
                    self.stack.mount("synapse-esp", self.root / "efi", fstype="tmpfs", options="size=512M,mode=0700")
                    self.runner.change(["mcopy", "-s", "-n", "-Q", "-i", d.esp, "::/*", str(self.root / "efi")],
                                       env={"MTOOLS_SKIP_CHECK": "1"}, note="ESP contents into the staging tmpfs")
            yield self.root
            if staged and write_back:
                bootloader.copy_staged_esp(self.runner, self.root / "efi", d.esp, self.what)
        finally:
            self.release()
            self.devices = None

    def add_guest_check(self, name: str, script: str) -> None:
        """Install an extra check script (prints ``AIOS-CHECK key=value``); call inside :meth:`mounted`
        (or before :meth:`configure`, which installs it with the base check)."""
        self.extra_checks[name] = script
        if self.stack is not None and self.devices is not None:
            sysconfig.install_guest_check(self.runner, self.root, {name: script})

    def __repr__(self) -> str:
        conf = "confirmed" if self.params.target.confirmed else "NOT confirmed: destructive steps are refused"
        return (f"Phase 2 target: {self.kind} {self.what} ({conf})\n  {self.system.distro} "
                f"{self.system.suite if self.system.distro == 'debian' else ''} on {self.system.filesystem}, "
                f"ESP {self.system.esp_size_mib} MiB; mounted at {self.mount_dir} while building")


def _with_extra(tokens: list[str], extra: list[str]) -> list[str]:
    """Pure: ``tokens`` plus the ``extra`` whose names are not there yet (as the entry gets them)."""
    names = {t.split("=", 1)[0] for t in tokens}
    return tokens + [t for t in extra if t.split("=", 1)[0] not in names]


def open_target(run: Run) -> Target:
    return Target(run)


def build(run: Run, force: bool = False, verify: bool = True) -> dict[str, Any]:
    """Every step in order (what tests and later phases call). Returns the step results."""
    t = open_target(run)
    out: dict[str, Any] = {"target": t, "validation": t.validate(), "prepare": t.prepare(force=force)}
    for s in STEPS:
        out[s] = getattr(t, s)()
    if verify:
        out["verify"] = t.verify()
    return out
