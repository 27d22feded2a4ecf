"""Phase 6: Synapse OS, the image that boots into a serving model.

:func:`build_image` turns the base system (phase 02's :mod:`aios_lib.system.image`) into Synapse OS:

1. the base image (debootstrap + dracut + systemd-boot), taken from this phase's own cache when
   its inputs are unchanged;
2. a third partition ``ai-data`` (XFS) for ``/var/ai-data`` (:mod:`aios_lib.service.readonly`);
3. llama.cpp's bin folder in ``/opt/synapse/llama`` (an AVX2 build by default: the blueprint's
   target ISA, and what QEMU's TCG emulates; a ``-march=native`` build of an AVX-512 host would
   die with SIGILL there), verified on this host first, the service user, the verified model with
   its pinned hash, the ``llama-server`` unit (:mod:`aios_lib.service.units`), enabled;
4. hardening: masks, ssh off, the read-only boot entry with 5.2's words (:mod:`aios_lib.service.hardening`);
5. ``systemd-analyze verify`` / ``security`` inside the image tree (their rows kept in the image's
   manifest), and the guest check.

The result is cached under ``~/.cache/synapse/synapse-os/<key>/disk.img``, ``key`` a hash of the
base image's key, the llama.cpp build, the model hash, the parameters and this phase's code; the
base system it starts from under ``synapse-os-base/<base key>/disk.img`` (the newest two of each).
:mod:`aios_lib.service.boot_check` boots it; :mod:`aios_lib.service.distributable` packs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from . import hardening, install, model_gate, readonly, unit_checks, units
from ..core import cache
from ..core.paths import PACKAGE_DIR
from ..facts import blockdev, rootfs
from ..facts.base import gather
from ..facts.boot import root_ref_of
from ..system import target as target_mod
from ..runtime.cpus import cpu_plan

#: what decides the content of the Synapse OS layer (part of the cache key; a missing file is an error)
SOURCES = ["service/units.py", "service/hardening.py", "service/readonly.py", "service/image.py", "service/install.py",
           "params/service.py", "facts/blockdev.py", "facts/rootfs.py", "runtime/cpus.py", "settings/units.py",
           "settings/journald.py", "data/synapse-check.sh"]
#: the manifest of the Synapse OS image, next to it
MANIFEST = ".synapse-os.json"

CHECK_SCRIPT = PACKAGE_DIR / "data" / "synapse-check.sh"

#: an AVX2 x86-64 build (Haswell and later): every AVX-512 / AMX option off
AVX2_OPTIONS = {
    "GGML_NATIVE": "OFF", "GGML_SSE42": "ON", "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_BMI2": "ON",
    "GGML_FMA": "ON", "GGML_F16C": "ON", "GGML_AVX_VNNI": "OFF", "GGML_AVX512": "OFF",
    "GGML_AVX512_VBMI": "OFF", "GGML_AVX512_VNNI": "OFF", "GGML_AVX512_BF16": "OFF",
    "GGML_AMX_TILE": "OFF", "GGML_AMX_INT8": "OFF", "GGML_AMX_BF16": "OFF",
}


def llama_for_image(run):
    """The llama.cpp build that goes into the image (``service.image_build``), llama-server only,
    verified on this host before it is copied (and again inside the booted image)."""
    from ..runtime import model, verify

    kind = run.params.service.image_build
    path = model.provision(run).path
    if kind == "native":
        return verify.working_build(run, path, label="native", targets=["llama-server"]).build
    if kind == "generic":
        return verify.working_build(run, path, label="generic", native=False, targets=["llama-server"]).build
    return verify.working_build(run, path, label="avx2", native=False, cmake_options=AVX2_OPTIONS,
                                targets=["llama-server"]).build


def synapse_key(run, base_key: str, build_key: str, model_sha: str) -> str:
    p = run.params
    return cache.key({"base": base_key, "llama": build_key, "model": model_sha,
                      "service": p.service.model_dump(mode="json"), "machine": p.machine.model_dump(mode="json"),
                      "chosen": run.recorded("05", "chosen"), "code": cache.code_hash(SOURCES)})


def check_script(run) -> str:
    sp = run.params.service
    text = CHECK_SCRIPT.read_text()
    for k, v in {"UNIT": "llama-server.service", "PORT": str(sp.port), "WINDOW": str(sp.idle_window_s),
                 "DATA_DIR": sp.data_dir}.items():
        text = text.replace(f"@@{k}@@", v)
    return text


@dataclass
class SynapseImage:
    path: Path
    key: str
    state: str
    unit: units.Unit | None = None
    checks: Any = None  # systemd-analyze verify/security table, in the image tree
    entry: readonly.BootEntry | None = None
    cmdline: hardening.SecurityCmdline | None = None
    masked: dict | None = None
    initrd_volatile: bool | None = None
    planned: bool = False
    steps: list[str] = field(default_factory=list)
    skipped: str | None = None

    def _repr_markdown_(self) -> str:
        if self.skipped:
            return f"**Synapse OS image: not built**: {self.skipped}"
        if self.planned:
            return f"**Synapse OS image `{self.path}`: planned** (key `{self.key}`)\n\n" + "\n".join(f"- {s}" for s in self.steps)
        return (f"**Synapse OS image `{self.path}`**: {self.state} (key `{self.key}`)\n\n"
                + "\n".join(f"- {s}" for s in self.steps))


def manifest(image: Path) -> target_mod.Manifest:
    """The Synapse OS manifest of ``image`` (what built it; read as {} when missing)."""
    return target_mod.Manifest(Path(image), MANIFEST)


def build_image(run, force: bool = False) -> SynapseImage:
    """Build (or reuse) the Synapse OS image at ``target.image``. See the module docstring."""
    from ..system import image as image_mod
    from ..runtime import model as model_mod
    from ..system.disk import partition_path
    from ..params import ParamsError

    p, sp, r = run.params, run.params.service, run.runner
    if p.target.kind == "none":
        return SynapseImage(Path("-"), "-", "skipped", planned=r.plan,
                            skipped=f"{p.source_file or 'these parameters'} set target.kind: none (no disk, no "
                                    "image); parameters/synapse-os.yaml builds the image")
    if p.target.kind != "image":
        raise ParamsError([f"{p.source_file or 'parameters'}: target.kind must be 'image' for the Synapse OS "
                           "image (see parameters/synapse-os.yaml); write the finished image to a disk with dd"])
    if sp.engine != "llama-server":
        raise ParamsError([f"{p.source_file or 'parameters'}: key `service.engine`: the image bundles llama-server only; "
                           "ollama is a separate download (its unit is generated and checked, and shipped as "
                           "/usr/share/synapse/ollama.service): set service.engine: llama-server"])
    # everything that can refuse, before anything is written
    cmd_probe = hardening.security_cmdline(run, read_only=sp.read_only_root)
    budget = units.memory_high(run)
    place = cpu_plan(run, "service")
    build = llama_for_image(run)
    model = model_mod.provision(run)
    gate = None
    if not (build.planned or model.planned):
        gate = model_gate.gate_model(model.path, p.runtime.model.sha256, llama_cpp=model_mod.run_supported(run))
        run.record("model_gate", model_gate.asdict_gate(gate))
    base = image_mod.start(run)
    spec = base.spec
    val = image_mod.validate(run, base)
    key = synapse_key(run, val.key, getattr(build, "key", "?"), p.runtime.model.sha256)
    img = spec.image
    unit = units.llama_unit(run, Path(str(model.path)).name, budget, place)
    out = SynapseImage(img, key, "planned", unit=unit, cmdline=cmd_probe, planned=r.plan)
    m = manifest(img).read()
    if not force and m.get("key") == key and m.get("complete"):
        out.state, out.steps = "up to date (same inputs: nothing rebuilt)", [f"{img} matches key {key}"]
        run.record("image", {"path": str(img), "key": key, "state": out.state})
        return out
    cached = target_mod.cached_image("synapse-os", key)
    if not force and cached:
        target_mod.restore_image(r, spec, cached, note="Synapse OS image with identical inputs from the cache")
        manifest(img).write(r, {**target_mod.cached_info("synapse-os", key), "from_cache": str(cached)}, fresh=True)
        out.state, out.steps = "copied from the cache (same inputs)", [f"{cached} -> {img}"]
        run.record("image", {"path": str(img), "key": key, "state": out.state})
        return out

    # 1. the base system: this phase's cache of it, else phase 02's build (no boot: ours checks it too)
    base_cache = target_mod.cached_image("synapse-os-base", val.key)
    if base_cache and not force:
        target_mod.restore_image(r, spec, base_cache, note="base system with identical inputs from the cache")
        out.steps.append(f"base system from the cache ({val.key})")
    else:
        image_mod.prepare(run, base)
        image_mod.run_steps(run, base)
        target_mod.publish_image(r, img, "synapse-os-base", val.key, target_mod.read_manifest(spec))
        out.steps.append("base system built (phase 02 steps)")
    # the file is about to become Synapse OS: phase 02 must not take it for its own up-to-date image
    target_mod.write_manifest(r, spec, complete=False, note="turned into Synapse OS by phase 06")
    manifest(img).write(r, {"key": key, "complete": False}, fresh=True)

    # 2. the data partition
    part = readonly.add_data_partition(run, img, spec.what)
    out.steps.append(f"partition {part.number} `{readonly.DATA_LABEL}` ({part.size_bytes / 2**30:.2f} GiB)"
                     + ("" if part.added else ", already there"))

    # 3-5. into the tree
    with target_mod.mounted(r, spec) as mnt:
        root = mnt.root
        dev = partition_path(mnt.devices.disk, part.number)
        if gather(r, blockdev.blkid(dev)).get("TYPE") != "xfs":
            r.destructive(["mkfs.xfs", "-f", "-L", readonly.DATA_LABEL, dev], device=spec.what)
        mnt.stack.mount(dev, root / sp.data_dir.lstrip("/"), options="noatime")
        uuid = gather(r, blockdev.blkid(dev)).get("UUID") or "<ai-data-uuid>"
        if not uuid.startswith("<"):
            fstab = (root / "etc/fstab").read_text() if (root / "etc/fstab").exists() else ""
            r.write_file(root / "etc/fstab", readonly.add_fstab_line(fstab, readonly.fstab_line(uuid, sp.data_dir),
                                                                     sp.data_dir), note="/var/ai-data by UUID")
        inst = install.install(run, root, build.bin_dir, Path(str(model.path)), p.runtime.model.sha256, unit)
        out.steps.append(inst._repr_markdown_())
        # the blueprint's ollama.service, corrected: shipped as a file to copy, not loaded by systemd
        ollama = units.ollama_unit(run, budget, place)
        r.write_file(root / "usr/share/synapse/ollama.service", ollama.text, mode=0o644,
                     note="optional alternative (ollama not bundled)")
        out.masked = hardening.mask_units(run, root)
        out.steps.append(f"masked {len(out.masked['masked'])} units (ssh: {out.masked['ssh']})")
        out.entry = readonly.install_volatile_entry_dir(
            run, root / "efi", make_default=True,
            options_for=lambda ref: hardening.security_cmdline(run, root_ref=ref or "PARTUUID=<root>",
                                                               read_only=sp.read_only_root).tokens)
        out.cmdline = hardening.security_cmdline(run, root_ref=root_ref_of(out.entry.text) or "PARTUUID=<root>",
                                                 read_only=sp.read_only_root)
        out.steps.append(f"boot entry {out.entry.name} (default): `{out.cmdline}`")
        initrd = gather(r, rootfs.initrd_listing(root))
        out.initrd_volatile = initrd["volatile_root"] if not r.plan or initrd["listing"] else None
        out.steps.append(f"initrd has systemd-volatile-root: {out.initrd_volatile}")
        out.checks = unit_checks.check_units(run, [unit], {}, root=root, record="units_in_image")
        target_mod.add_guest_check(r, mnt, "synapse", check_script(run))
        r.change(["fstrim", str(root / sp.data_dir.lstrip("/"))], check=False, quiet=True)
    info = manifest(img).write(r, {
        "key": key, "complete": True, "unit": unit.text, "entry": out.entry.text if out.entry else None,
        "cmdline": out.cmdline.tokens if out.cmdline else None, "masked": out.masked,
        # what was checked inside the tree, so a cache hit can show (and a test assert) it too
        "units_in_image": [{**c.row(), "problems": c.verify.problems} for c in out.checks.attrs["checks"]],
        "initrd_volatile": out.initrd_volatile,
        "memory_high_bytes": budget.high_bytes, "placement": place.placement(),
        "model": {"file": Path(str(model.path)).name, "sha256": p.runtime.model.sha256},
        "llama": {"bin_dir": str(build.bin_dir), "image_build": sp.image_build}}, fresh=True)
    target_mod.publish_image(r, img, "synapse-os", key, info)
    out.state = "planned" if r.plan else "built"
    run.record("image", {"path": str(img), "key": key, "state": out.state, "steps": out.steps})
    return out
