"""Phase 6: Synapse OS, the image that boots into a serving model, and its distributable form.

:func:`build_image` turns the base system (phase 02's :mod:`aios_lib.image`) into Synapse OS:

1. the base image (debootstrap + dracut + systemd-boot), taken from this phase's own cache when
   its inputs are unchanged;
2. a third partition ``ai-data`` (XFS) for ``/var/ai-data`` (:mod:`aios_lib.readonly`);
3. llama.cpp's bin folder in ``/opt/synapse/llama`` (an AVX2 build by default: the blueprint's
   target ISA, and what QEMU's TCG emulates; a ``-march=native`` build of an AVX-512 host would
   die with SIGILL there), the service user, the verified model with its pinned hash, the
   ``llama-server`` unit (:mod:`aios_lib.service`), enabled;
4. hardening: masks, ssh off, the read-only boot entry with 5.2's words (:mod:`aios_lib.hardening`);
5. ``systemd-analyze verify`` / ``security`` inside the image tree, and the guest check.

The result is cached under ``~/.cache/synapse/synapse-os/<key>.img``, ``key`` a hash of the base
image's key, the llama.cpp build, the model hash, the parameters and this phase's code.
:func:`boot_check` boots a working copy under QEMU (writes reach the copy, so a second boot sees
what the first left) and compares every row; :func:`double_boot` does the read-only-root test;
:func:`distributable` compresses the image with zstd, hashes it and writes how to put it on a disk.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hardening, readonly, service
from .paths import PACKAGE_DIR, cache_dir, resolve_in_project

#: what decides the content of the Synapse OS layer (part of the cache key)
SOURCES = ["service.py", "hardening.py", "readonly.py", "package.py", "params/service.py", "data/synapse-check.sh"]
CHECK_SCRIPT = PACKAGE_DIR / "data" / "synapse-check.sh"
SCHED_BATCH = "3"  # /proc/PID/sched "policy" (include/uapi/linux/sched.h)

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
    from . import model, verify

    kind = run.params.service.image_build
    path = model.provision(run).path
    if kind == "native":
        return verify.working_build(run, path, label="native", targets=["llama-server"]).build
    if kind == "generic":
        return verify.working_build(run, path, label="generic", native=False, targets=["llama-server"]).build
    return verify.working_build(run, path, label="avx2", native=False, cmake_options=AVX2_OPTIONS,
                                targets=["llama-server"]).build


def _code_hash() -> dict:
    return {f: hashlib.sha256((PACKAGE_DIR / f).read_bytes()).hexdigest()[:16] for f in SOURCES
            if (PACKAGE_DIR / f).exists()}


def synapse_key(run, base_key: str, build_key: str, model_sha: str) -> str:
    p = run.params
    blob = json.dumps({"base": base_key, "llama": build_key, "model": model_sha,
                       "service": p.service.model_dump(mode="json"), "machine": p.machine.model_dump(mode="json"),
                       "chosen": run.recorded("05", "chosen"), "code": _code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    unit: service.Unit | None = None
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


def _manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".synapse-os.json")


def _read_manifest(image: Path) -> dict:
    p = _manifest_path(image)
    try:
        return json.loads(p.read_text()) if p.exists() and image.exists() else {}
    except json.JSONDecodeError:
        return {}


def build_image(run, force: bool = False) -> SynapseImage:
    """Build (or reuse) the Synapse OS image at ``target.image``. See the module docstring."""
    from . import image as image_mod
    from . import model as model_mod
    from .disk import partition_path, read_uuids  # noqa: F401
    from .params import ParamsError

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
    budget = service.memory_high(run)
    place = service.placement(run)
    build = llama_for_image(run)
    model = model_mod.provision(run)
    gate = None
    if not (build.planned or model.planned):
        gate = service.gate_model(model.path, p.runtime.model.sha256)
        run.record("model_gate", service.asdict_gate(gate))
    t = image_mod.open_target(run)
    val = t.validate()
    key = synapse_key(run, val.key, getattr(build, "key", "?"), p.runtime.model.sha256)
    img = t.image
    unit = service.llama_unit(run, Path(str(model.path)).name, budget, place)
    out = SynapseImage(img, key, "planned", unit=unit, cmdline=cmd_probe, planned=r.plan)
    m = _read_manifest(img)
    if not force and m.get("key") == key and m.get("complete"):
        out.state, out.steps = "up to date (same inputs: nothing rebuilt)", [f"{img} matches key {key}"]
        run.record("image", {"path": str(img), "key": key, "state": out.state})
        return out
    cached = cache_dir("synapse-os") / f"{key}.img"
    if not force and cached.exists():
        r.change(["mkdir", "-p", str(img.parent)], quiet=True)
        r.destructive(["cp", "--sparse=always", str(cached), str(img)], device=t.what,
                      note="Synapse OS image with identical inputs from the cache")
        r.write_file(_manifest_path(img), json.dumps({**json.loads(cached.with_suffix(".json").read_text()),
                                                      "from_cache": str(cached)}, indent=2))
        out.state, out.steps = "copied from the cache (same inputs)", [f"{cached} -> {img}"]
        run.record("image", {"path": str(img), "key": key, "state": out.state})
        return out

    # 1. the base system: this phase's cache of it, else phase 02's build (no boot: ours checks it too)
    base_cache = cache_dir("synapse-os-base") / f"{val.key}.img"
    if base_cache.exists() and not force:
        r.change(["mkdir", "-p", str(img.parent)], quiet=True)
        r.destructive(["cp", "--sparse=always", str(base_cache), str(img)], device=t.what,
                      note="base system with identical inputs from the cache")
        out.steps.append(f"base system from the cache ({base_cache.name})")
    else:
        t.prepare()
        for s in image_mod.STEPS:
            getattr(t, s)()
        if not r.plan:
            r.work(["cp", "--sparse=always", str(img), str(base_cache) + ".tmp"], note="base system into the cache")
            r.work(["mv", str(base_cache) + ".tmp", str(base_cache)])
        out.steps.append("base system built (phase 02 steps)")
    # the file is about to become Synapse OS: phase 02 must not take it for its own up-to-date image
    t._write_manifest(complete=False, note="turned into Synapse OS by phase 06")
    r.write_file(_manifest_path(img), json.dumps({"key": key, "complete": False}, indent=2))

    # 2. the data partition
    part = readonly.add_data_partition(run, img, t.what)
    out.steps.append(f"partition {part.number} `{readonly.DATA_LABEL}` ({part.size_bytes / 2**30:.2f} GiB)"
                     + ("" if part.added else ", already there"))

    # 3-5. into the tree
    with t.mounted() as root:
        dev = partition_path(t.devices.disk, part.number)
        have = r.probe(["blkid", "-p", "-o", "export", dev], check=False, quiet=True)
        if "TYPE=xfs" not in (have.stdout or ""):
            r.destructive(["mkfs.xfs", "-f", "-L", readonly.DATA_LABEL, dev], device=t.what)
        t.stack.mount(dev, root / sp.data_dir.lstrip("/"), options="noatime")
        uuid = r.probe(["blkid", "-p", "-s", "UUID", "-o", "value", dev], check=False, quiet=True).stdout.strip() \
            or "<ai-data-uuid>"
        if not uuid.startswith("<"):
            fstab = (root / "etc/fstab").read_text() if (root / "etc/fstab").exists() else ""
            r.write_file(root / "etc/fstab", readonly.add_fstab_line(fstab, readonly.fstab_line(uuid, sp.data_dir),
                                                                     sp.data_dir), note="/var/ai-data by UUID")
        inst = service.install(run, root, build.bin_dir, Path(str(model.path)), p.runtime.model.sha256, unit)
        out.steps.append(inst._repr_markdown_())
        # the blueprint's ollama.service, corrected: shipped as a file to copy, not loaded by systemd
        ollama = service.ollama_unit(run, budget, place)
        r.write_file(root / "usr/share/synapse/ollama.service", ollama.text, mode=0o644,
                     note="optional alternative (ollama not bundled)")
        out.masked = hardening.mask_units(run, root)
        out.steps.append(f"masked {len(out.masked['masked'])} units (ssh: {out.masked['ssh']})")
        out.entry = readonly.install_volatile_entry_dir(
            run, root / "efi", make_default=True,
            options_for=lambda ref: hardening.security_cmdline(run, root_ref=ref or "PARTUUID=<root>",
                                                               read_only=sp.read_only_root).tokens)
        out.cmdline = hardening.security_cmdline(run, root_ref=readonly.root_ref_of(out.entry.text) or "PARTUUID=<root>",
                                                 read_only=sp.read_only_root)
        out.steps.append(f"boot entry {out.entry.name} (default): `{out.cmdline}`")
        ls = r.probe(["sh", "-c", "lsinitrd /boot/initrd.img-* 2>/dev/null || true"], root=root, check=False, quiet=True)
        out.initrd_volatile = readonly.initrd_has_volatile(ls.stdout) if not r.plan or ls.stdout else None
        out.steps.append(f"initrd has systemd-volatile-root: {out.initrd_volatile}")
        out.checks = service.check_units(run, [unit], {}, root=root, record="units_in_image")
        t.add_guest_check("synapse", check_script(run))
        r.change(["fstrim", str(root / sp.data_dir.lstrip("/"))], check=False, quiet=True)
    manifest = {"key": key, "complete": True, "unit": unit.text, "entry": out.entry.text if out.entry else None,
                "cmdline": out.cmdline.tokens if out.cmdline else None, "masked": out.masked,
                "memory_high_bytes": budget.high_bytes, "placement": place.__dict__,
                "model": {"file": Path(str(model.path)).name, "sha256": p.runtime.model.sha256},
                "llama": {"bin_dir": str(build.bin_dir), "image_build": sp.image_build},
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    r.write_file(_manifest_path(img), json.dumps(manifest, indent=2))
    if not r.plan:
        r.work(["cp", "--sparse=always", str(img), str(cached) + ".tmp"], note="Synapse OS image into the cache")
        r.work(["mv", str(cached) + ".tmp", str(cached)])
        cached.with_suffix(".json").write_text(json.dumps(manifest, indent=2))
        for old in sorted(cached.parent.glob("*.img"), key=lambda q: q.stat().st_mtime, reverse=True)[2:]:
            old.unlink()
            old.with_suffix(".json").unlink(missing_ok=True)
    out.state = "planned" if r.plan else "built"
    run.record("image", {"path": str(img), "key": key, "state": out.state, "steps": out.steps})
    return out


# ---- the boot check --------------------------------------------------------------------------------
def parse_cpu_list(text: str | None) -> list[int]:
    """``0-2,5`` -> [0, 1, 2, 5] (/proc/PID/status Cpus_allowed_list)."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def synapse_rows(run, report: dict[str, str], manifest: dict) -> list[dict]:
    """Requested vs in effect for the service and the hardening, from ``AIOS-CHECK syn_*`` lines."""
    sp = run.params.service
    g = lambda k: report.get(f"syn_{k}")  # noqa: E731
    rows: list[dict] = []

    def row(check, requested, in_effect, ok):
        rows.append({"check": check, "requested": requested, "in effect": in_effect, "ok": bool(ok)})

    row("synapse check ran", "begin..end", f"{g('begin') is not None}..{g('end')}", g("begin") and g("end") == "ok")
    row("llama-server.service active", "active", g("active"), g("active") == "active")
    row("/health answers", "HTTP 200", g("health"), " 200" in (g("health") or ""))
    content = (g("completion_content") or "").removeprefix('"content":"').rstrip('"')
    row("completion from the bundled model (loopback)", "HTTP 200 + text",
        f"{(g('completion_status') or '').strip()} {content!r} in {g('completion_s')} s",
        " 200" in (g("completion_status") or "") and bool(content.strip()))
    row("service user", sp.user, g("user"), g("user") == sp.user)
    row("scheduling policy", "SCHED_BATCH (3)", f"{g('sched_policy')} ({g('chrt')})",
        g("sched_policy") == SCHED_BATCH and "SCHED_BATCH" in (g("chrt") or ""))
    row("nice", str(sp.nice), g("nice"), g("nice") == str(sp.nice))
    want_high = manifest.get("memory_high_bytes")
    row("cgroup memory.high", str(want_high), g("memory_high"), g("memory_high") == str(want_high))
    row("OOMScoreAdjust", str(sp.oom_score_adjust), g("oom_score_adj"), g("oom_score_adj") == str(sp.oom_score_adjust))
    cpus = (manifest.get("placement") or {}).get("cpus") or []
    got_cpus = parse_cpu_list(g("cpus_allowed"))
    row("CPU affinity", ",".join(map(str, cpus)), g("cpus_allowed"), got_cpus == list(cpus))
    threads = (manifest.get("placement") or {}).get("threads")
    argv = (g("argv") or "").split()
    got_t = argv[argv.index("-t") + 1] if "-t" in argv and argv.index("-t") + 1 < len(argv) else None
    row("threads (-t)", str(threads), got_t, got_t == str(threads))
    row("LimitMEMLOCK", "unlimited" if sp.mlock else "default", g("memlock"),
        (g("memlock") == "unlimited") if sp.mlock else g("memlock") not in (None, ""))
    row("sandbox: NoNewPrivs, seccomp filter, no capabilities", "1, 2, 0000000000000000",
        f"{g('no_new_privs')}, {g('seccomp')}, {g('cap_eff')}",
        g("no_new_privs") == "1" and g("seccomp") == "2" and g("cap_eff") == "0000000000000000")
    listening = [x for x in (g("listening") or "").split(",") if x]
    row("listening sockets", f"only {sp.host}:{sp.port}", ",".join(listening) or None,
        listening == [f"{sp.host}:{sp.port}"])
    if not sp.ssh:
        row("ssh (local-only)", "masked / not installed", f"{g('ssh_enabled')}, sshd installed: {g('ssh_installed')}",
            g("ssh_installed") == "no" and (g("ssh_enabled") or "") in ("masked", "masked-runtime")
            and not any(x.endswith(":22") for x in listening))
    jd = hardening.parse_journald_config("[Journal]\n" + (g("journald") or "").replace(" ", "\n"))
    want_jd = dict(run.params.system.journald)
    row("journald limits", " ".join(f"{k}={v}" for k, v in want_jd.items()), g("journald"),
        all(jd.get(k) == v for k, v in want_jd.items()))
    if sp.read_only_root:
        row("read-only root (systemd.volatile=overlay)", "overlay", f"{g('root_fstype')} ({g('root_source')})",
            g("root_fstype") == "overlay")
    row(f"{sp.data_dir} persistent partition", "xfs (ai-data)", f"{g('data_fstype')} {g('data_source')}",
        g("data_fstype") == "xfs")
    idle = idle_from(run, report)
    if idle is not None:
        row(f"idle CPU over {idle.window_s:g} s (blueprint goal < {idle.goal_pct} %)", f"< {idle.goal_pct} %",
            f"{idle.busy_pct:.3f} % ({idle.busy_ticks} of {idle.ticks} ticks; most: "
            f"{', '.join((g('idle_top') or '').split(',')[:4]) or '?'})", idle.meets_goal)
    else:
        row("idle CPU", f"< {sp.idle_goal_pct} %", None, False)
    # a measurement against the blueprint's goal, not a setting the parameters ask for
    rows[-1]["kind"] = "goal"
    return rows


def idle_from(run, report: dict[str, str]) -> hardening.IdleCpu | None:
    b, a = report.get("syn_stat_before"), report.get("syn_stat_after")
    if not (a and b):
        return None
    return hardening.idle_cpu(b, a, float(report.get("syn_idle_window_s") or run.params.service.idle_window_s),
                              run.params.service.idle_goal_pct)


@dataclass
class BootCheck:
    label: str
    boot: Any
    rows: list[dict]
    report: dict[str, str]
    idle: hardening.IdleCpu | None = None
    running: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every row the parameters asked for matches (goals such as idle CPU are reported apart)."""
        return bool(self.rows) and all(r["ok"] for r in self.rows if r.get("kind") != "goal")

    @property
    def goals_met(self) -> bool:
        return all(r["ok"] for r in self.rows if r.get("kind") == "goal")

    @property
    def idle_top(self) -> list[str]:
        return [x for x in (self.report.get("syn_idle_top") or "").split(",") if x]

    @property
    def planned(self) -> bool:
        return bool(getattr(self.boot, "planned", False))

    def table(self):
        import pandas as pd

        return pd.DataFrame([{**r, "kind": r.get("kind", "setting")} for r in self.rows],
                            columns=["check", "requested", "in effect", "ok", "kind"])

    def _repr_html_(self) -> str:
        if self.planned:
            return f"<p>{self.label}: <b>planned, not run</b></p>"
        b = self.boot
        asked = [r for r in self.rows if r.get("kind") != "goal"]
        goals = [r for r in self.rows if r.get("kind") == "goal"]
        head = (f"<p>{self.label}: QEMU {b.accel.name}, rc={b.rc}, {b.seconds:.0f} s; "
                f"{sum(r['ok'] for r in asked)}/{len(asked)} requested settings match; goals met: "
                f"{sum(r['ok'] for r in goals)}/{len(goals)}; serial log {b.log}</p>")
        return head + self.table().to_html(index=False)


def working_copy(run, image: Path, name: str = "synapse-os-boot.img") -> Path:
    """A sparse copy of the image to boot (boots write to it; the built image stays pristine)."""
    dst = Path(run.dir) / name
    run.runner.work(["cp", "--sparse=always", str(image), str(dst)], note="working copy for the boot checks")
    return dst


def boot_check(run, disk: Path, label: str = "synapse-boot", manifest: dict | None = None,
               base_rows: bool = True) -> BootCheck:
    """Boot ``disk`` (writes kept: no snapshot) and compare the base rows and the Synapse rows."""
    from . import image as image_mod
    from . import vm

    sp = run.params.service
    manifest = manifest if manifest is not None else _read_manifest(resolve_in_project(run.params.target.image))
    exp = None
    if base_rows:
        t = image_mod.open_target(run)
        exp = t.expectation()
        exp.cmdline = list(manifest.get("cmdline") or exp.cmdline)
        if sp.read_only_root:
            exp.root_fstype, exp.root_options = "overlay", []
        exp.masked = sorted(set(exp.masked) | set((manifest.get("masked") or {}).get("masked", [])))
    res = vm.boot(run.runner, disk, memory_mib=sp.vm_ram_mib, smp=sp.vm_cpus, snapshot=False,
                  timeout=max(run.params.system.boot_timeout_s, 900), workdir=run.dir, label=label, expect=exp)
    if res.planned:
        return BootCheck(label, res, [], {})
    base = list(res.rows)
    if exp is not None and not res.report.get("masked") and res.report.get("syn_masked"):
        # the base check's `systemctl list-unit-files` came back empty once under a loaded TCG host
        # (a D-Bus timeout); the Synapse check runs the same command later: compare with its reading
        patched = dict(res.report, masked=res.report["syn_masked"].replace(",", " "))
        base = vm.compare(patched, exp)
        for r in base:
            if r["check"] == "masked units":
                r["in effect"] = f"{r['in effect']} (read by the synapse check: the base check's list was empty)"
    rows = base + synapse_rows(run, res.report, manifest)
    check = BootCheck(label, res, rows, res.report, idle_from(run, res.report),
                      hardening.parse_running((res.report.get("syn_running_services") or "").replace(",", "\n")))
    run.record(label, {"rows": rows, "report": res.report, "seconds": round(res.seconds, 1), "rc": res.rc,
                       "serial_log": res.log, "report_log": res.report_log, "ok": check.ok,
                       "idle_cpu_pct": check.idle.busy_pct if check.idle else None, "idle_top": check.idle_top,
                       "running": check.running})
    return check


@dataclass
class DoubleBoot:
    first: BootCheck
    second: BootCheck
    rows: list[dict]

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["check", "requested", "in effect", "ok"])

    def _repr_html_(self) -> str:
        if self.first.planned:
            return "<p>double boot: <b>planned, not run</b></p>"
        return "<p>read-only root over two boots of the same disk</p>" + self.table().to_html(index=False)


def double_boot(run, disk: Path, first: BootCheck | None = None) -> DoubleBoot:
    """Boot ``disk`` twice (the first boot may be the service check already done on it)."""
    first = first or boot_check(run, disk, label="synapse-boot1")
    second = boot_check(run, disk, label="synapse-boot2", base_rows=False)
    if first.planned or second.planned:
        return DoubleBoot(first, second, [])
    strip = lambda rep: {k.removeprefix("syn_"): v for k, v in rep.items() if k.startswith("syn_")}  # noqa: E731
    rows = readonly.persistence_rows(strip(first.report), strip(second.report))
    run.record("double_boot", {"rows": rows, "ok": all(r["ok"] for r in rows)})
    return DoubleBoot(first, second, rows)


@dataclass
class ImageVerification:
    first: BootCheck | None
    double: DoubleBoot | None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.first and self.double and self.first.ok and self.double.ok)

    def _repr_html_(self) -> str:
        if self.skipped:
            return f"<p>boot check: not run ({self.skipped})</p>"
        return self.first._repr_html_() + self.double._repr_html_()


def verify_image(run, img: SynapseImage) -> ImageVerification:
    """A working copy of the image, booted twice: the service check (boot 1, which also writes the
    markers) and the read-only-root check (boot 2)."""
    if img.skipped:
        return ImageVerification(None, None, skipped=img.skipped)
    work = working_copy(run, img.path)
    first = boot_check(run, work, label="synapse-boot1")
    db = double_boot(run, work, first)
    if not run.plan:
        run.runner.work(["rm", "-f", str(work)], note="the working copy is no longer needed")
    return ImageVerification(first, db)


# ---- the distributable ---------------------------------------------------------------------------------
WRITE_NOTE = """Synapse OS: {name}
sha256 ({name}): {sha}
uncompressed: {size_gib:.2f} GiB raw disk image (GPT: ESP, root XFS, ai-data XFS)

Check, then write it to a whole disk (this ERASES the disk; name it by /dev/disk/by-id/...):

    sha256sum -c {name}.sha256
    zstd -dc {name} | sudo dd of=/dev/disk/by-id/<your-disk> bs=4M conv=fsync status=progress

The target machine boots it with UEFI (systemd-boot, no menu). The root file system is read-only
(systemd.volatile=overlay: changes to / vanish at reboot); models and results live on the ai-data
partition at {data_dir}. llama-server answers on {host}:{port} (loopback only{ssh}).
The disk may be larger than the image: the GPT backup header is then not at the end; fix it with
`sudo sfdisk --relocate gpt-bak-std /dev/disk/by-id/<your-disk>` (the partitions are unchanged).
The llama.cpp inside is built for {isa}; the kernel command line is:
    {cmdline}
"""


@dataclass
class Distributable:
    path: Path
    sha256: str | None
    size_bytes: int | None
    image_bytes: int | None
    note: Path
    planned: bool = False

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"**planned**: `{self.path}` (zstd), `{self.path.name}.sha256`, `{self.note.name}`"
        return (f"`{self.path}`: {self.size_bytes / 2**20:.0f} MiB (image {self.image_bytes / 2**30:.2f} GiB), "
                f"sha256 `{self.sha256}`; how to write it: `{self.note}`")


def parse_sha256sum(text: str) -> str | None:
    m = re.match(r"^([0-9a-f]{64})\s", text or "")
    return m.group(1) if m else None


def distributable(run, img: "SynapseImage | Path | None" = None) -> Distributable | str:
    """``<image>.zst`` (zstd, multithreaded), ``<image>.zst.sha256`` and ``WRITE-TO-DISK.txt``."""
    sp = run.params.service
    r = run.runner
    if isinstance(img, SynapseImage):
        if img.skipped:
            return f"not packaged: {img.skipped}"
        img = img.path
    image = Path(img or resolve_in_project(run.params.target.image))
    out = image.with_name(image.name + ".zst")
    r.work(["zstd", "-T0", f"-{sp.zstd_level}", "-f", "-q", str(image), "-o", str(out)],
           note="the distributable image", timeout=3600)
    s = r.work(["sha256sum", out.name], cwd=str(out.parent), note="its checksum")
    sha = parse_sha256sum(s.stdout) if not s.planned else None
    note = image.with_name("WRITE-TO-DISK.txt")
    m = _read_manifest(image)
    if sha:
        r.write_file(out.with_name(out.name + ".sha256"), s.stdout, note="sha256sum -c file")
        r.write_file(note, WRITE_NOTE.format(
            name=out.name, sha=sha, size_gib=image.stat().st_size / 2**30, data_dir=sp.data_dir, host=sp.host,
            port=sp.port, ssh="; ssh is not installed" if not sp.ssh else "", isa=sp.image_build,
            cmdline=" ".join(m.get("cmdline") or [])), note="how to write it to a disk")
        d = Distributable(out, sha, out.stat().st_size, image.stat().st_size, note)
        run.record("distributable", {"path": str(out), "sha256": sha, "size_bytes": d.size_bytes,
                                     "image_bytes": d.image_bytes, "note": str(note)})
        return d
    return Distributable(out, None, None, None, note, planned=True)
