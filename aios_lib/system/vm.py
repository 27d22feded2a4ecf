"""Boot an image (or a kernel) in QEMU and read what the guest reports.

Used by phase 2 (the base image), phase 3 (a custom kernel in the image, or a tiny kernel with
``-kernel``/``-initrd``) and phase 6 (the hardened image, booted twice).

* Firmware: OVMF (UEFI) for disk images, so the boot goes through systemd-boot as on the real
  machine; a direct ``-kernel`` boot needs no firmware (:func:`boot_kernel`).
* Acceleration: KVM when it works, else TCG. :func:`detect_accel` finds out by trying: a short
  OVMF boot under KVM must still be running after a few seconds without a KVM error (on the
  development machine /dev/kvm exists but OVMF under it dies with ``KVM internal error``).
* Writes never reach the image: the disk is attached with ``snapshot=on``.
* The guest self-check (installed by ``sysconfig.install_guest_check``) runs only when QEMU passes
  the SMBIOS OEM string ``aios-guest-check``; it prints ``AIOS-CHECK key=value`` lines between
  ``AIOS-CHECK-BEGIN`` and ``AIOS-CHECK-END`` and powers off. It writes them to a second serial
  port (the guest's ttyS1) that QEMU sends straight to a file: ttyS0 is the console, where a
  getty's vhangup() at the wrong moment silently cut the report off (seen in CI: the check ran and
  powered off, but not one line arrived).
  :func:`parse_guest_report` turns the serial log into a dict; :func:`compare` into rows of
  requested vs in effect.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.runner import Runner
from ..facts.base import gather
from ..facts.kernel import bracketed
from ..facts.virt import kvm_trial

GUEST_CHECK_TOKEN = "aios-guest-check"
FIRMWARE = [  # (code, vars template): Debian/Ubuntu, Arch, Fedora
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
]
QEMU = "qemu-system-x86_64"


def find_firmware() -> tuple[str, str]:
    for code, vars_ in FIRMWARE:
        if Path(code).exists() and Path(vars_).exists():
            return code, vars_
    raise FileNotFoundError("no OVMF firmware found (install the ovmf package): looked for "
                            + ", ".join(c for c, _ in FIRMWARE))


@dataclass
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str

    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


_ACCEL_CACHE: dict[str, Accel] = {}


def detect_accel(runner: Runner, probe_seconds: float = 8.0) -> Accel:
    """KVM if it works here (tried with a short firmware boot), else TCG. Read-only; cached."""
    if "accel" in _ACCEL_CACHE:
        return _ACCEL_CACHE["accel"]
    if os.environ.get("AIOS_QEMU_ACCEL") in ("tcg", "kvm"):
        acc = Accel(os.environ["AIOS_QEMU_ACCEL"], "forced by AIOS_QEMU_ACCEL")
    elif not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        acc = Accel("tcg", "no usable /dev/kvm")
    else:
        try:
            code, _ = find_firmware()
        except FileNotFoundError as e:
            acc = Accel("tcg", str(e))
        else:
            trial = gather(runner, kvm_trial(QEMU, code, probe_seconds))
            if trial["usable"]:
                acc = Accel("kvm", f"a KVM firmware boot ran {probe_seconds:.0f}s without error")
            else:
                acc = Accel("tcg", f"KVM present but unusable: {trial['why']}")
    _ACCEL_CACHE["accel"] = acc
    return acc


# ---- parsing ---------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def parse_guest_report(serial: str) -> dict[str, str]:
    """Pure: ``AIOS-CHECK key=value`` lines of a serial log -> {key: value}.

    Tolerates carriage returns, escape sequences and a shell prompt before the marker; the
    special keys ``_begin``/``_end`` say whether the markers were seen.
    """
    out: dict[str, str] = {}
    begin = end = False
    for raw in serial.replace("\r", "\n").splitlines():
        line = _ANSI.sub("", raw)
        if "AIOS-CHECK-BEGIN" in line:
            begin = True
            continue
        if "AIOS-CHECK-END" in line:
            end = True
            continue
        i = line.find("AIOS-CHECK ")
        if i < 0:
            continue
        body = line[i + len("AIOS-CHECK "):]
        if "=" not in body:
            continue
        k, v = body.split("=", 1)
        out[k.strip()] = v.strip()
    out["_begin"], out["_end"] = str(begin), str(end)
    return out


def _size_mib(text: str | None) -> float | None:
    m = re.match(r"^([0-9.]+)\s*([KMGT])?i?B?$", (text or "").strip())
    if not m:
        return None
    mult = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, None: 1 / (1024 * 1024)}[m.group(2)]
    return float(m.group(1)) * mult


@dataclass
class Expectation:
    """What the guest should report (built from the parameters by the phase)."""

    cmdline: list[str]
    thp: str = "madvise"
    zram_algorithm: str | None = "zstd"
    zram_size: str = "ram"
    journal_volatile: bool = True
    journal_runtime_max: str | None = "50M"
    masked: list[str] = field(default_factory=list)
    root_fstype: str = "xfs"
    root_options: list[str] = field(default_factory=lambda: ["noatime"])
    default_target: str = "multi-user.target"
    hostname: str | None = None
    sysctl: dict[str, str] = field(default_factory=dict)
    loader: str = "systemd-boot"
    #: the initrd was systemd-based (dracut): systemd-analyze then counts an "(initrd)" phase
    systemd_initrd: bool = True
    #: extra rows: key in the report -> expected value (exact match); later phases add theirs
    extra: dict[str, str] = field(default_factory=dict)


def compare(report: dict[str, str], exp: Expectation) -> list[dict]:
    """Rows of check / requested / in effect / ok. Pure."""
    from .cmdline import parse_cmdline

    rows = []

    def row(check, requested, in_effect, ok):
        rows.append({"check": check, "requested": requested, "in effect": in_effect, "ok": bool(ok)})

    row("guest check ran", "BEGIN..END on ttyS1", f"begin={report.get('_begin')} end={report.get('_end')}",
        report.get("_begin") == "True" and report.get("_end") == "True")
    loader = report.get("loader", "")
    row("boot loader", exp.loader, loader or None, loader.startswith(exp.loader))
    got = parse_cmdline(report.get("cmdline", ""))
    row("kernel command line", " ".join(exp.cmdline), " ".join(got) if "cmdline" in report else None, got == exp.cmdline)
    thp = bracketed(report.get("thp"))
    row("THP mode", exp.thp, thp, thp == exp.thp)
    if exp.zram_algorithm:
        alg = bracketed(report.get("zram_algorithm"))
        swaps = report.get("swaps", "")
        on = "/dev/zram0" in swaps
        row("zram swap", f"/dev/zram0 swap, {exp.zram_algorithm}", f"{'/dev/zram0 swap' if on else 'no zram swap'}, {alg}",
            on and alg == exp.zram_algorithm)
        if exp.zram_size == "ram":
            try:
                disk = int(report.get("zram_disksize", "0"))
                mem = int(report.get("memtotal_kb", "0")) * 1024
            except ValueError:
                disk = mem = 0
            row("zram size", "= RAM", f"{disk / 2**30:.2f} GiB of {mem / 2**30:.2f} GiB RAM",
                mem > 0 and abs(disk - mem) <= 0.02 * mem)
    if exp.journal_volatile:
        run, var = report.get("journal_run_files", "?"), report.get("journal_var_files", "?")
        row("journal in /run only", "files in /run/log/journal, none in /var/log/journal",
            f"{run} in /run, {var} in /var", run not in ("?", "0") and var == "0")
    if exp.journal_runtime_max:
        got_max = report.get("journal_runtime_max") or None
        a, b = _size_mib(got_max), _size_mib(exp.journal_runtime_max)
        row("journal RuntimeMaxUse", exp.journal_runtime_max, got_max, a is not None and b is not None and abs(a - b) < 0.5)
    masked = set((report.get("masked") or "").split())
    row("masked units", ", ".join(sorted(exp.masked)) or "(none exist)",
        ", ".join(sorted(masked & set(exp.masked))) or "(none)", set(exp.masked) <= masked)
    parts = (report.get("root_mount") or "").split()
    fstype, opts = (parts[1], parts[2].split(",")) if len(parts) >= 3 else (None, [])
    row("root filesystem", exp.root_fstype, fstype, fstype == exp.root_fstype)
    row("root mount options", ",".join(exp.root_options), ",".join(opts) or None,
        all(o in opts for o in exp.root_options))
    row("default target", exp.default_target, report.get("default_target"), report.get("default_target") == exp.default_target)
    if exp.hostname:
        row("hostname", exp.hostname, report.get("hostname"), report.get("hostname") == exp.hostname)
    for k, v in exp.sysctl.items():
        got_v = report.get(f"sysctl.{k}")
        row(f"sysctl {k}", str(v), got_v, got_v is not None and got_v.split() == str(v).split())
    if exp.systemd_initrd:
        bt = report.get("boot_time", "")
        row("systemd initrd (dracut)", "an (initrd) phase in systemd-analyze time", bt or None, "(initrd)" in bt)
    failed = report.get("failed_units", "")
    row("failed units", "none", failed or "none", failed == "" and "failed_units" in report)
    for k, v in exp.extra.items():
        row(k, v, report.get(k), report.get(k) == v)
    return rows


# ---- booting ---------------------------------------------------------------------------------
@dataclass
class BootResult:
    argv: list[str]
    accel: Accel
    rc: int | None
    seconds: float
    timed_out: bool
    serial: str
    report: dict[str, str]
    planned: bool = False
    log: str | None = None
    rows: list[dict] = field(default_factory=list)
    report_log: str | None = None  # what the guest check wrote on ttyS1

    @property
    def ok(self) -> bool:
        return self.planned or (bool(self.rows) and all(r["ok"] for r in self.rows))

    @property
    def mismatches(self) -> list[dict]:
        return [r for r in self.rows if not r["ok"]]

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["check", "requested", "in effect", "ok"])

    def _repr_html_(self) -> str:
        head = (f"<p>QEMU ({self.accel.name}: {self.accel.reason}) "
                + ("<b>planned, not run</b>" if self.planned else
                   f"rc={self.rc} in {self.seconds:.0f}s{' (TIMED OUT)' if self.timed_out else ''}; serial log {self.log}")
                + "</p>")
        return head + (self.table().to_html(index=False) if self.rows else "")


def qemu_argv(*, disk: str | None = None, kernel: str | None = None, initrd: str | None = None,
              append: str | None = None, firmware: tuple[str, str] | None = None, vars_copy: str | None = None,
              accel: Accel, memory_mib: int = 2048, smp: int = 2, snapshot: bool = True,
              guest_check: bool = True, report_file: str | None = None,
              extra: list[str] | None = None) -> list[str]:
    argv = [QEMU, *accel.qemu_args(), "-machine", "q35", "-smp", str(smp), "-m", str(memory_mib),
            "-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
    if firmware:
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={firmware[0]}",
                 "-drive", f"if=pflash,format=raw,file={vars_copy}"]
    if disk:
        argv += ["-drive", f"file={disk},format=raw,if=virtio,cache=unsafe" + (",snapshot=on" if snapshot else "")]
    if kernel:
        argv += ["-kernel", kernel]
    if initrd:
        argv += ["-initrd", initrd]
    if append:
        argv += ["-append", append]
    if guest_check:
        argv += ["-smbios", f"type=11,value={GUEST_CHECK_TOKEN}"]
        if report_file:  # the second -serial is the guest's ttyS1: the check's report channel
            argv += ["-serial", f"file:{report_file}"]
    return argv + list(extra or [])


def boot(runner: Runner, disk: str | os.PathLike | None = None, *, kernel: str | None = None,
         initrd: str | None = None, append: str | None = None, uefi: bool | None = None,
         memory_mib: int = 2048, smp: int = 2, timeout: float = 420, snapshot: bool = True,
         guest_check: bool = True, workdir: str | os.PathLike | None = None, label: str = "boot",
         expect: Expectation | None = None, extra_args: list[str] | None = None) -> BootResult:
    """Boot ``disk`` (UEFI via OVMF) or ``kernel``/``initrd``/``append`` (direct) until it powers off.

    The serial console is captured (``workdir/<label>-serial.log``), the guest report parsed, and,
    with ``expect``, compared row by row (``result.rows``, ``result.ok``). A planned result in plan
    mode. ``timeout`` bounds the whole boot; a guest that never powers off counts as failed.
    """
    accel = detect_accel(runner)
    uefi = (disk is not None and kernel is None) if uefi is None else uefi
    workdir = Path(workdir) if workdir else Path(os.environ.get("TMPDIR", "/tmp"))
    firmware = vars_copy = None
    if uefi:
        firmware = find_firmware()
        # a fresh variable store per boot, outside the record (it is firmware state, not a result)
        vars_copy = str(Path(tempfile.gettempdir()) / "synapse-ovmf" / f"{label}-{os.getpid()}-{id(runner)}.fd")
        runner.write_file(vars_copy, Path(firmware[1]).read_bytes(), note="fresh UEFI variable store")
    report_file = workdir / f"{label}-report.log"
    argv = qemu_argv(disk=str(disk) if disk else None, kernel=kernel, initrd=initrd, append=append, firmware=firmware,
                     vars_copy=vars_copy, accel=accel, memory_mib=memory_mib, smp=smp, snapshot=snapshot,
                     guest_check=guest_check, report_file=str(report_file), extra=extra_args)
    r = runner.work(argv, timeout=timeout, check=False, progress=_boot_progress,
                    note=f"verification boot ({accel.name})")
    if vars_copy and not r.planned:  # (planned: it was never written)
        runner.work(["rm", "-f", vars_copy], quiet=True, note="the variable store of that boot")
    if r.planned:
        return BootResult(argv, accel, None, 0.0, False, "", {}, planned=True)
    serial = r.stdout + ("\n[stderr]\n" + r.stderr if r.stderr.strip() else "")
    log = workdir / f"{label}-serial.log"
    runner.write_file(log, serial, note="serial console of the verification boot")
    # the report channel (ttyS1) first; the console too, for images whose check still writes there
    channel = report_file.read_text(errors="replace") if report_file.exists() else ""
    report = parse_guest_report(channel + "\n" + r.stdout)
    res = BootResult(argv, accel, r.rc, r.duration, r.timed_out, serial, report, log=str(log),
                     report_log=str(report_file) if channel else None)
    if expect is not None:
        res.rows = compare(report, expect)
        if r.timed_out:
            res.rows.insert(0, {"check": "powered off in time", "requested": f"< {timeout:.0f}s",
                                "in effect": f"still running at {r.duration:.0f}s", "ok": False})
    return res


def boot_kernel(runner: Runner, kernel: str, initrd: str | None = None, append: str = "console=ttyS0",
                disk: str | None = None, **kw) -> BootResult:
    """Boot a kernel directly (``-kernel``/``-initrd``/``-append``), optionally with a disk attached.

    For phase 3's tiny kernels: pass ``append="console=ttyS0 panic=-1 ..."`` and have the initrd
    print and power off; ``result.serial`` holds the console, ``result.report`` any AIOS-CHECK lines.
    """
    kw.setdefault("guest_check", disk is not None)
    return boot(runner, disk, kernel=kernel, initrd=initrd, append=append, uefi=False, **kw)


_STAGES = [("BdsDxe", 0.05), ("EFI stub", 0.15), ("Linux version", 0.2), ("Run /init", 0.3),
           ("Switching root", 0.5), ("Reached target", 0.6), ("login:", 0.8), ("aios-guest-check: started", 0.9), ("AIOS-CHECK-BEGIN", 0.9),
           ("reboot: Power down", 1.0)]


def _boot_progress(line: str):
    for text, frac in _STAGES:
        if text in line:
            return frac
    return None
