"""Phase 2: install the base system onto a disk or a disk image, and prove it boots.

The blueprint's steps, in order, as functions over one small state (:class:`Build`); each returns
something that displays itself in the notebook::

    base = start(run)                  # parameters -> target (image file or real disk)
    validate(run, base)                # the target and the cache state, before anything runs
    prepare(run, base)                 # safety (disk in use?), leftovers of a killed run, skip / cache / build
    partition(run, base)               # GPT: ESP + root            (destructive: needs target.confirm)
    format(run, base)                  # FAT32 + XFS/ext4           (destructive)
    mount(run, base)                   # root, ESP (or a staged ESP when this kernel has no vfat)
    bootstrap(run, base)               # debootstrap / pacstrap + dracut
    configure(run, base)               # fstab, hostname, units, journald, zram, THP, sysctl: requested vs in effect
    install_bootloader(run, base)      # systemd-boot, BLS entry, loader.conf
    finish(run, base)                  # clean, trim, copy the staged ESP in, unmount, detach
    verify(run, base)                  # QEMU boot + guest self-check: requested vs in effect

:func:`build` runs them all. If a step fails, everything mounted or attached so far is released
before the error propagates, and the error says how to resume. A rerun with identical inputs
skips the build ("up to date"), or copies a verified image from the cache; otherwise it rebuilds
from scratch, and says which. The parameters arrive validated (mount options normalised, the
kernel command line checked at load): this module only checks the target.

Later phases reuse the image through :mod:`aios_lib.system.target` (``mounted()``,
``add_guest_check()``) and boot it again with :func:`verify`:

* a custom kernel (phase 3): inside ``mounted()``, install it (modules + ``kernel-install add`` in
  the chroot): the entry gets the same ``/etc/kernel/cmdline``;
  ``verify(run, start(run), extra={"kernel": "<kver>"}, cmdline_extra=[...])`` checks it booted.
* more partitions (phase 6's ``/var/ai-data``): set ``system.root_size_mib`` so the root leaves
  free space, add the partition with ``sfdisk`` through ``runner.destructive(..., device=spec.what)``.
* another boot entry (phase 6's ``systemd.volatile=overlay``): write it under ``root/efi/loader/entries``
  inside ``mounted()``; ``vm.boot(..., expect=...)`` compares a boot against any :class:`vm.Expectation`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import bootloader, bootstrap as bootstrap_mod, sysconfig, target, vm
from .cmdline import Cmdline, build_cmdline
from .disk import DiskRefused, check_disk, partition_path, read_uuids, release_stale, vfat_available
from .target import Attached, TargetSpec, attach, release
from ..core import cache
from ..core.result import DestructiveRefused
from ..facts import blockdev
from ..facts.base import gather
from ..params import ParamsError
from ..settings import settings_table

#: source files whose content decides what an image contains (part of the cache key; a file
#: missing from this list's places is an error, see :func:`aios_lib.core.cache.code_hash`)
BUILD_SOURCES = ["system/image.py", "system/target.py", "system/disk.py", "system/bootstrap.py",
                 "system/sysconfig.py", "system/bootloader.py", "system/cmdline.py", "params/mount_options.py",
                 "facts/blockdev.py", "facts/boot.py", "facts/rootfs.py",
                 "settings/base.py", "settings/_conf.py", "settings/units.py", "settings/sysctl.py",
                 "settings/thp.py", "settings/zram.py", "settings/journald.py", "settings/rootfiles.py",
                 "data/guest-check.sh"]
#: the build steps proper (skipped when the image is up to date or copied from the cache)
STEPS = ["partition", "format", "mount", "bootstrap", "configure", "install_bootloader", "finish"]
#: the verified base images: ~/.cache/synapse/base-image/<build key>/disk.img
CACHE_KIND = "base-image"


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


@dataclass
class Build:
    """What the steps learn and pass on while phase 02 builds one target."""

    spec: TargetSpec
    title: str  # what the notebook shows for the target
    att: Attached
    validation: Validation | None = None
    #: the build steps are skipped: the image is up to date, or ``cache_hit`` was copied
    skip: bool = False
    cache_hit: Path | None = None
    kver: str | None = None  # the kernel bootstrap installed
    staged_esp: bool = True  # the ESP is a tmpfs copied onto the FAT partition by finish()
    cmdline: Cmdline | None = None  # the boot entry's command line (with the real PARTUUID once installed)

    def __repr__(self) -> str:
        return self.title


def build_key(params) -> str:
    """Hash of everything that decides the image's content (parameters + build code)."""
    s = params.system.model_dump(mode="json", exclude={"verify_boot", "boot_timeout_s", "use_image_cache"})
    return cache.key({"system": s, "size": params.target.image_size, "trusted": params.machine.trusted_offline,
                      "code": cache.code_hash(BUILD_SOURCES)})


def start(run) -> Build:
    """The phase's target (see the module docstring); ``target.kind: none`` is refused."""
    spec = target.open_target(run)
    p, s = run.params, run.params.system
    conf = "confirmed" if p.target.confirmed else "NOT confirmed: destructive steps are refused"
    title = (f"Phase 2 target: {spec.kind} {spec.what} ({conf})\n  {s.distro} "
             f"{s.suite if s.distro == 'debian' else ''} on {s.filesystem}, "
             f"ESP {s.esp_size_mib} MiB; mounted at {spec.mount_dir} while building")
    return Build(spec, title, Attached(spec))


def _step(run, b: Build, name: str, fn: Callable[[], tuple[str, Any]]) -> StepResult:
    if b.skip and name in STEPS:
        why = "from the verified cache" if b.cache_hit else "the image is up to date (same inputs)"
        return StepResult(name, "skipped", why)
    runner = run.runner
    start_at = len(runner.history)
    try:
        detail, data = fn()
    except BaseException as e:
        released = release(b.att)
        where = "" if not released else f" Released: {', '.join(released)}."
        resume = (f"Nothing is left mounted or attached.{where} To resume, fix the cause and rerun "
                  f"`aios run 02 --params {run.params.source_file or '<file>'}`: the build restarts from the "
                  "partitioning step (a half-built image is never reused; cached packages are)")
        if isinstance(e, (ParamsError, DiskRefused, DestructiveRefused, KeyboardInterrupt)):
            raise
        raise PhaseFailed(f"step {name} failed: {e}\n{resume}") from e
    cmds = [c for c in runner.history[start_at:] if c.kind != "probe"]
    status = "planned" if runner.plan else "done"
    run.record(f"step.{name}", {"status": status, "detail": detail})
    return StepResult(name, status, detail, cmds, data)


def _destroy(run, b: Build, argv: list[str], **kw):
    return run.runner.destructive(argv, device=b.spec.what, **kw)


# ---- the steps, in order ---------------------------------------------------------------------
def validate(run, b: Build) -> Validation:
    """What will be built and whether it must be: the command line, the target, the cache state."""
    p, spec = run.params, b.spec
    src = p.source_file or "parameters"
    b.cmdline = build_cmdline(p, "PARTUUID=<root-partuuid>")
    # the parameters' own warnings (they were checked at load) and the command line's
    warnings = list(dict.fromkeys([*getattr(p, "warnings", []), *b.cmdline.warnings]))
    if spec.kind == "disk" and not spec.disk.startswith("/dev/disk/by-id/"):
        raise ParamsError([f"{src}: key `target.device`: {spec.disk!r} is not a stable name; name the disk "
                           "by /dev/disk/by-id/... so the confirmation cannot point at another disk after a reboot"])
    if not p.target.confirmed:
        warnings.append(f"target.confirm does not repeat {spec.what!r}: destructive steps will be refused"
                        + (" (plan mode lists them)" if run.runner.plan else ""))
    key = build_key(p)
    state = "disk (always rebuilt)"
    if spec.image:
        m = target.read_manifest(spec)
        if m.get("key") == key and m.get("complete"):
            state = "up to date (a rerun skips the build)"
        elif p.system.use_image_cache and target.cached_image(CACHE_KIND, key):
            state = "in the verified cache (copied, not rebuilt)"
        elif m.get("key") == key:
            state = "left incomplete by an interrupted build: rebuilt from scratch"
        elif m:
            state = "stale or incomplete: rebuilt from scratch"
        else:
            state = "new"
    opts = list(p.system.mount_options)
    b.validation = Validation(spec.what, opts, b.cmdline, warnings, key, state)
    run.record("validation", {"target": spec.what, "kind": spec.kind, "mount_options": opts,
                              "cmdline": str(b.cmdline), "warnings": warnings, "key": key, "state": state})
    return b.validation


def prepare(run, b: Build, force: bool = False) -> StepResult:
    """Release leftovers of a killed run, refuse a disk in use, decide skip / cache / build."""
    if b.validation is None:
        validate(run, b)
    spec, runner, system = b.spec, run.runner, run.params.system

    def go():
        released = release_stale(runner, str(spec.image) if spec.image else None, spec.mount_dir)
        notes = [f"released leftovers of an interrupted run: {', '.join(released)}"] if released else []
        if spec.kind == "disk":
            info = check_disk(runner, spec.disk)
            notes.append(info.get("note") or f"{spec.disk} ({info['kernel_name']}) is not in use")
            run.record("disk", info)
            return "; ".join(notes) + ". Building from scratch.", info
        key = b.validation.key
        m = target.read_manifest(spec)
        if not force and m.get("key") == key and m.get("complete"):
            b.skip = True
            return "; ".join(notes + [f"{spec.image} is up to date (build key {key}): build steps skipped"]), m
        cached = target.cached_image(CACHE_KIND, key) if system.use_image_cache and not force else None
        if cached:
            target.restore_image(runner, spec, cached, note="verified base image with identical inputs from the cache")
            b.skip, b.cache_hit = True, cached
            info = target.cached_info(CACHE_KIND, key)
            target.write_manifest(runner, spec, key=key, complete=True, from_cache=str(cached),
                                  masked=info.get("masked"))
            return "; ".join(notes + [f"copied the verified image {key}/{cached.name} from the cache: "
                                      "build steps skipped"]), None
        what = ("rebuilt from scratch (an interrupted build of the same inputs left it incomplete)"
                if m.get("key") == key else
                "rebuilt from scratch (inputs changed or last build incomplete)" if m else "built from scratch")
        return "; ".join(notes + [f"{spec.image} will be {what}"]), None

    return _step(run, b, "prepare", go)


def partition(run, b: Build) -> StepResult:
    """GPT: the ESP and the root partition (the first destructive step)."""
    spec, runner = b.spec, run.runner

    def go():
        if spec.image:
            runner.change(["mkdir", "-p", str(spec.image.parent)], quiet=True)
            # the manifest says "incomplete" before the first byte changes: a run killed from here on
            # leaves an image that no rerun takes for up to date
            target.write_manifest(runner, spec, key=b.validation.key if b.validation else None, complete=False)
            _destroy(run, b, ["truncate", "-s", "0", str(spec.image)], note="start from an empty file")
            _destroy(run, b, ["truncate", "-s", run.params.target.image_size, str(spec.image)])
            _destroy(run, b, spec.layout.parted_argv(str(spec.image)))
        else:
            dev = spec.device
            _destroy(run, b, ["wipefs", "-a", dev], note="old signatures off")
            _destroy(run, b, spec.layout.parted_argv(dev))
            runner.change(["partx", "-u", dev], check=False)
            runner.probe(["udevadm", "settle"], check=False, quiet=True)  # a wait, not a read
            if not runner.plan and not Path(partition_path(dev, 1)).exists():
                # no udev / no GPT support in this kernel: add the partition nodes ourselves
                runner.change(["partx", "-a", dev], check=False)
        table = gather(runner, blockdev.partition_table(spec.device))
        return f"GPT: ESP {spec.layout.esp_mib} MiB FAT32 + root {spec.layout.root_fs}", table

    return _step(run, b, "partition", go)


def format(run, b: Build) -> StepResult:  # the blueprint's word (shadows the builtin in this module)
    """FAT32 on the ESP, the root file system on the root partition."""
    def go():
        d = attach(run.runner, b.att)
        _destroy(run, b, b.spec.layout.mkfs_esp_argv(d.esp))
        _destroy(run, b, b.spec.layout.mkfs_root_argv(d.root))
        uuids = read_uuids(run.runner, d)
        return (f"{d.esp} FAT32 (UUID {uuids['esp'].get('UUID')}), {d.root} {b.spec.layout.root_fs} "
                f"(UUID {uuids['root'].get('UUID')})"), uuids

    return _step(run, b, "format", go)


def mount(run, b: Build) -> StepResult:
    """The root with its final mount options, and the ESP at /efi (mounted, or staged)."""
    def go():
        d = attach(run.runner, b.att)
        opts = ",".join(run.params.system.mount_options)
        b.att.stack.mount(d.root, b.spec.root, options=opts or None)
        b.staged_esp = not vfat_available(run.runner)
        how = target.mount_esp(run.runner, b.att, b.staged_esp)
        return f"{d.root} on {b.spec.root} ({opts}); {how}", None

    return _step(run, b, "mount", go)


def bootstrap(run, b: Build) -> StepResult:
    """debootstrap or pacstrap into the mounted root, and a dracut initrd."""
    def go():
        res = bootstrap_mod.bootstrap(run.runner, b.spec.root, run.params.system, b.att.stack)
        b.kver = res.kernel
        run.record("bootstrap", {"distro": res.distro, "packages": res.packages, "mirror": res.mirror,
                                 "kernel": res.kernel, "cache": res.cache})
        return f"{res.distro}: {len(res.packages)} packages from {res.mirror}; kernel {res.kernel or '(planned)'}", res

    return _step(run, b, "bootstrap", go)


def configure(run, b: Build) -> StepResult:
    """Every root setting applied and read back; the guest self-check installed."""
    runner, system, spec = run.runner, run.params.system, b.spec

    def go():
        d = attach(runner, b.att)
        fstab = sysconfig.plan_fstab(runner, spec.root, d, system.filesystem, system.mount_options)
        rows = sysconfig.configure(runner, spec.root, system, fstab)
        sysconfig.install_guest_check(runner, spec.root)
        masked = next((r for r in rows if r.name == "masked units"), None)
        run.record("settings", [r.__dict__ for r in rows])
        run.record("masked_units", masked.requested if masked else [])
        target.write_manifest(runner, spec, masked=masked.requested if masked else [])
        bad = [r.name for r in rows if not r.ok]
        if bad:
            raise RuntimeError(f"settings not in effect after applying: {', '.join(bad)}")
        return f"fstab from {fstab.source}; {len(rows)} settings applied and read back", settings_table(rows)

    return _step(run, b, "configure", go)


def install_bootloader(run, b: Build) -> StepResult:
    """systemd-boot, the BLS entry with the root's PARTUUID, loader.conf; read back."""
    runner, spec = run.runner, b.spec

    def go():
        d = attach(runner, b.att)
        uuids = read_uuids(runner, d)
        b.cmdline = build_cmdline(run.params, f"PARTUUID={uuids['root'].get('PARTUUID')}")
        b.kver = b.kver or bootstrap_mod.kernel_version(runner, spec.root)
        res = bootloader.install(runner, spec.root, b.cmdline, b.kver, run.params.system.distro)
        run.record("bootloader", {"cmdline": res.cmdline, "entry": res.entry, "loader_conf": res.loader_conf,
                                  "esp_files": res.esp_files, "warnings": res.warnings, "checks": res.checks})
        if not res.ok:
            bad = [c["item"] for c in res.checks if not c["ok"]]
            raise RuntimeError(f"boot loader read-back mismatch: {', '.join(bad)}")
        return f"systemd-boot + entry for {b.kver or '<kver>'}: `{b.cmdline}`", res

    return _step(run, b, "install_bootloader", go)


def finish(run, b: Build) -> StepResult:
    """Clean, trim, copy the staged ESP onto its partition, unmount, detach."""
    runner, spec = run.runner, b.spec

    def go():
        d = attach(runner, b.att)
        if run.params.system.distro == "debian":
            runner.change(["apt-get", "clean"], root=spec.root)
        runner.change(["fstrim", "-v", str(spec.root)], check=False, note="unused blocks back (smaller image)")
        if b.staged_esp:
            bootloader.copy_staged_esp(runner, spec.root / "efi", d.esp, spec.what)
        released = release(b.att)
        if spec.image:
            target.write_manifest(runner, spec, key=b.validation.key if b.validation else None, complete=True)
        size = ""
        if spec.image and spec.image.exists() and not runner.plan:
            st = spec.image.stat()
            size = f"; {spec.image} {st.st_size / 2**30:.1f} GiB, {st.st_blocks * 512 / 2**20:.0f} MiB allocated"
        return f"released: {', '.join(released) or 'nothing'}{size}", None

    return _step(run, b, "finish", go)


STEP_FUNCTIONS: dict[str, Callable[[Any, Build], StepResult]] = {
    "partition": partition, "format": format, "mount": mount, "bootstrap": bootstrap, "configure": configure,
    "install_bootloader": install_bootloader, "finish": finish}


def run_steps(run, b: Build) -> dict[str, StepResult]:
    """The build steps proper (:data:`STEPS`), in order, after :func:`prepare`."""
    return {name: STEP_FUNCTIONS[name](run, b) for name in STEPS}


# ---- verification ----------------------------------------------------------------------------
def expected_cmdline(run, b: Build) -> list[str]:
    """The boot entry's command line: the one installed, else rebuilt with the image's root PARTUUID."""
    if b.cmdline is not None and "<" not in str(b.cmdline):
        return str(b.cmdline).split()
    partuuid = None
    if not run.runner.plan and b.spec.image and b.spec.image.exists():
        partuuid = gather(run.runner, blockdev.partuuid(str(b.spec.image), 2))
    return str(build_cmdline(run.params, f"PARTUUID={partuuid or '<root-partuuid>'}")).split()


def expectation(run, b: Build, extra: dict[str, str] | None = None,
                cmdline_extra: list[str] | None = None) -> vm.Expectation:
    """What the guest must report, from the parameters (and the record of the build)."""
    system = run.params.system
    masked = run.recorded(run.phase, "masked_units", None)
    if masked is None:  # built in an earlier run (or copied from the cache): the manifest knows
        masked = target.read_manifest(b.spec).get("masked")
    if masked is None:
        masked = list(system.mask_units)
    return vm.Expectation(
        cmdline=bootloader.with_extra_tokens(expected_cmdline(run, b), cmdline_extra or []), thp=system.thp,
        zram_algorithm=system.zram_algorithm, zram_size=system.zram_size,
        journal_volatile=system.journald.get("Storage") == "volatile",
        journal_runtime_max=system.journald.get("RuntimeMaxUse"), masked=list(masked),
        root_fstype=system.filesystem, root_options=list(system.mount_options),
        default_target=system.default_target, hostname=system.hostname,
        sysctl={k: str(v) for k, v in system.sysctl.items()}, extra=dict(extra or {}))


def verify(run, b: Build, extra: dict[str, str] | None = None, label: str = "verify",
           cmdline_extra: list[str] | None = None) -> vm.BootResult:
    """Boot the target in QEMU (snapshot: the image is not changed) and compare every row.

    ``extra`` adds rows (report key -> expected value) for checks added with
    :func:`aios_lib.system.target.add_guest_check`; ``cmdline_extra`` what a later phase added to
    the boot entry's command line (phase 03's kernel entry). Raises :class:`PhaseFailed` on any
    mismatch. A verified new image goes into the cache (``label`` "verify").
    """
    system = run.params.system
    if not system.verify_boot:
        return vm.BootResult([], vm.Accel("-", "system.verify_boot is false"), None, 0.0, False, "", {}, planned=True)
    res = vm.boot(run.runner, b.spec.device, timeout=system.boot_timeout_s, workdir=run.dir, label=label,
                  expect=expectation(run, b, extra, cmdline_extra))
    if not res.planned:
        run.record(label, {"accel": res.accel.__dict__, "seconds": round(res.seconds, 1), "rc": res.rc,
                           "timed_out": res.timed_out, "report": res.report, "rows": res.rows,
                           "serial_log": res.log, "report_log": res.report_log, "ok": res.ok})
        if not res.ok:
            bad = "; ".join(f"{r['check']}: requested {r['requested']!r}, in effect {r['in effect']!r}"
                            for r in res.mismatches)
            raise PhaseFailed(f"verification boot: {len(res.mismatches)} mismatch(es): {bad} "
                              f"(serial log: {res.log})")
        if b.spec.image:
            target.write_manifest(run.runner, b.spec, verified=True, verified_rows=len(res.rows))
            if label == "verify":
                store_in_cache(run, b)
    return res


_verify = verify  # build()'s ``verify`` argument hides the function


def store_in_cache(run, b: Build, keep: int = 2) -> Path | None:
    """Keep a verified image as ~/.cache/synapse/base-image/<key>/disk.img (newest ``keep`` kept)."""
    if not (b.spec.image and run.params.system.use_image_cache and b.validation) or b.cache_hit:
        return None
    key = b.validation.key
    return target.cached_image(CACHE_KIND, key) or target.publish_image(
        run.runner, b.spec.image, CACHE_KIND, key, target.read_manifest(b.spec), keep=keep)


def build(run, force: bool = False, verify: bool = True) -> dict[str, Any]:
    """Every step in order (what tests and later phases call). Returns the step results."""
    b = start(run)
    out: dict[str, Any] = {"target": b, "validation": validate(run, b), "prepare": prepare(run, b, force=force)}
    out.update(run_steps(run, b))
    if verify:
        out["verify"] = _verify(run, b)
    return out
