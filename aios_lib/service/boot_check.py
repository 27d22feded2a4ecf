"""Phase 6: Synapse OS booted under QEMU and checked from inside.

:func:`boot_check` boots a working copy of the image (writes reach the copy, so a second boot sees
what the first left) and compares every row the guest reports with what the parameters asked for:
the service answers a completion, its scheduling policy, nice value, memory limit and CPUs, the
idle CPU, the masked units. :func:`double_boot` does the read-only-root test over two boots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from . import hardening, readonly
from ..core.paths import resolve_in_project
from ..facts._text import parse_cpulist
from ..facts.systemd import parse_running
from .image import SynapseImage, manifest as image_manifest


SCHED_BATCH = "3"  # /proc/PID/sched "policy" (include/uapi/linux/sched.h)

# ---- the boot check --------------------------------------------------------------------------------
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
    got_cpus = parse_cpulist(g("cpus_allowed"))
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
    from ..system import image as image_mod
    from ..system import vm

    sp = run.params.service
    manifest = manifest if manifest is not None else image_manifest(resolve_in_project(run.params.target.image)).read()
    exp = None
    if base_rows:
        exp = image_mod.expectation(run, image_mod.start(run))
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
                      parse_running((res.report.get("syn_running_services") or "").replace(",", "\n")))
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
