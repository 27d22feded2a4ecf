"""Boot a built (tiny) kernel under QEMU with a busybox initramfs and read back what it runs with.

The initramfs is a static busybox plus an ``/init`` script, packed with ``cpio -H newc``. The
script prints, between markers, ``uname -r``, ``/proc/cmdline``, the THP mode, the nohz_full
CPUs, the boot messages about ticks and preemption, and ``zcat /proc/config.gz``, then powers
the VM off. Full-image boots (systemd, the root filesystem) are :mod:`aios_lib.system.vm`'s job.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import kconfig
from ..core import cache
from ..core.paths import cache_dir

BUSYBOX = "/bin/busybox"  # Debian's busybox-static

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /dev /proc /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s /bin
dmesg -n 1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
sec() { echo; echo "@@SYNAPSE-BEGIN $1"; }
end() { echo "@@SYNAPSE-END $1"; }
sec uname; uname -r; end uname
sec cmdline; cat /proc/cmdline; end cmdline
sec thp; cat /sys/kernel/mm/transparent_hugepage/enabled 2>&1; end thp
sec nohz_full; cat /sys/devices/system/cpu/nohz_full 2>&1; end nohz_full
sec dmesg; dmesg | grep -i -E 'dynticks|preempt|mitigat|hz' ; end dmesg
sec config; zcat /proc/config.gz; end config
echo "@@SYNAPSE-DONE"
poweroff -f
"""


def initramfs(run) -> Path:
    """The busybox initramfs (cached by busybox binary + init script)."""
    bb = Path(BUSYBOX)
    bb_id = cache.file_sha256(bb)[:12] if bb.exists() else "missing"
    key = hashlib.sha256((bb_id + INIT).encode()).hexdigest()[:12]
    d = cache_dir("kernel-initramfs", key)
    out = d / "initramfs.cpio"
    if out.exists() and out.stat().st_size > 0:
        return out
    if not bb.exists():
        run.runner.change(["apt-get", "install", "-y", "--no-install-recommends", "busybox-static"])
    stage = d / "root"
    for sub in ("bin", "dev", "proc", "sys"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
    run.runner.work(["install", "-m", "0755", BUSYBOX, str(stage / "bin/busybox")])
    run.runner.write_file(stage / "init", INIT, mode=0o755, note="initramfs /init")
    files = [".", "bin", "bin/busybox", "dev", "proc", "sys", "init"]
    part = out.with_name(out.name + ".part")  # renamed when whole: a killed cpio leaves no initramfs
    run.runner.work(["cpio", "-o", "-H", "newc", "-R", "0:0", "-O", str(part)], cwd=str(stage),
                    input="\n".join(files) + "\n", note="pack the initramfs")
    run.runner.work(["mv", str(part), str(out)], quiet=True)
    return out


def qemu_argv(kernel: Path | str, initrd: Path | str, cmdline: list[str], memory: str = "1G",
              cpus: int = 2) -> list[str]:
    # TCG: /dev/kvm on the development machine is PVM and fails (MSR errors or a hang)
    return ["qemu-system-x86_64", "-accel", "tcg", "-smp", str(cpus), "-m", memory, "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(cmdline)]


_SECTION = re.compile(r"^@@SYNAPSE-BEGIN (\w+)\s*$(.*?)^@@SYNAPSE-END \1\s*$", re.M | re.S)


def parse_boot_output(text: str) -> dict:
    """Serial console output -> {uname, cmdline, thp, nohz_full, dmesg, config (dict), done}."""
    text = text.replace("\r", "")
    sections = {m.group(1): m.group(2).strip("\n") for m in _SECTION.finditer(text)}
    # "always [madvise] never"; kernel messages can interleave with the console output
    raw_thp = sections.get("thp", "")
    mm = re.search(r"\[?always\]?\s+\[?madvise\]?\s+\[?never\]?", raw_thp)
    thp = mm.group(0) if mm else raw_thp.strip()
    m = re.search(r"\[(\w+)\]", thp)
    return {
        "uname": sections.get("uname", "").strip() or None,
        "cmdline": sections.get("cmdline", "").strip() or None,
        "thp": thp.strip() or None,
        "thp_mode": m.group(1) if m else None,
        "nohz_full": next((l.strip() for l in sections.get("nohz_full", "").splitlines()
                           if re.fullmatch(r"[0-9,-]+|\(null\)", l.strip())), None),
        "dmesg": [l for l in sections.get("dmesg", "").splitlines() if l.strip()],
        "config": kconfig.parse_config(sections.get("config", "")),
        "done": "@@SYNAPSE-DONE" in text,
    }


@dataclass
class BootResult:
    command: str
    planned: bool
    rc: int | None = None
    seconds: float | None = None
    uname: str | None = None
    cmdline: str | None = None
    thp: str | None = None
    thp_mode: str | None = None
    nohz_full: str | None = None
    dmesg: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    done: bool = False
    tail: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.done and self.config)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["config"] = {"symbols": len(self.config)}
        return d

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"**boot planned, not run**\n\n```\n$ {self.command}\n```"
        lines = [f"**booted** in {self.seconds:.1f}s (rc={self.rc}, {'powered off' if self.done else 'NO poweroff'})",
                 "", "| read back | value |", "|---|---|",
                 f"| uname -r | `{self.uname}` |", f"| /proc/cmdline | `{self.cmdline}` |",
                 f"| THP enabled | `{self.thp}` |", f"| nohz_full CPUs | `{self.nohz_full}` |",
                 f"| /proc/config.gz | {len(self.config)} symbols |"]
        if self.dmesg:
            lines += ["", "```", *self.dmesg[:12], "```"]
        return "\n".join(lines)


def boot(run, kernel: Path | str, initrd: Path | str | None = None) -> BootResult:
    """Boot ``kernel`` under QEMU (TCG) with the busybox initramfs and parse what it printed."""
    b = run.params.kernel.boot
    initrd = initrd or initramfs(run)
    argv = qemu_argv(kernel, initrd, b.cmdline, b.memory, b.cpus)
    t0 = time.time()
    r = run.runner.work(argv, timeout=b.timeout_s, check=False, note="tiny kernel boot check")
    if r.planned:
        return BootResult(r.cmdline, True)
    parsed = parse_boot_output(r.stdout)
    return BootResult(r.cmdline, False, r.rc, round(time.time() - t0, 1), tail="\n".join(r.stdout.splitlines()[-15:]),
                      **parsed)


def compare(rows: list[kconfig.ResultRow], table: list[kconfig.TableRow], final: dict[str, str],
            booted: dict[str, str]):
    """Requested, resulting (.config after olddefconfig) and booted (/proc/config.gz) side by side."""
    import pandas as pd

    out = []
    for t, r in zip(table, rows):
        syms = [t.symbol or t.requested]
        if t.how == "choice-value":
            syms.append(t.requested)
        for s in syms:
            res, got = kconfig.config_value(final, s), kconfig.config_value(booted, s) if booted else None
            out.append({"requested": f"{t.requested}={t.value}", "symbol": s, "resulting": res,
                        "booted": got, "agree": (got == res) if booted else None,
                        "status": r.status})
    return pd.DataFrame(out, columns=["requested", "symbol", "resulting", "booted", "agree", "status"])
