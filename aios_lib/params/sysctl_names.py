"""sysctl names and values: which names a kernel has, and the ranges of the common ones.

``sysctl --system`` reads ``/etc/sysctl.d/*.conf`` at boot and skips a name the kernel does not
have with a line in the journal; a value out of range is refused by the kernel (``EINVAL``) the same
way. Nobody reads that line, so the parameters are checked when the file loads:

* the name must be in the table Synapse ships (``aios_lib/data/sysctl-names.txt``: the names
  documented in Linux 6.1 and 6.12 ``Documentation/admin-guide/sysctl/*.rst`` and
  ``Documentation/networking/ip-sysctl.rst``, plus every file under ``/proc/sys`` of the machine
  that generated it; per-interface names are kept with ``*`` for the interface);
* when the parameter file describes this host (see :func:`aios_lib.params.Params.targets_this_host`)
  the name must also exist under this kernel's ``/proc/sys``;
* the common names' values must be whole numbers in the kernel's range (:data:`RANGES`).

``python -m aios_lib.params.sysctl_names --docs DIR...`` regenerates the table (DIR: an extracted
``linux-source-X.Y``), adding this machine's ``/proc/sys``.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
from functools import lru_cache
from pathlib import Path

from ..core.paths import PACKAGE_DIR

DATA = PACKAGE_DIR / "data" / "sysctl-names.txt"
PROC_SYS = Path("/proc/sys")

#: name -> (lowest, highest) the kernel accepts (None: no bound). From the kernel's sysctl tables
#: (proc_dointvec_minmax bounds) and Documentation/admin-guide/sysctl/{vm,kernel}.rst.
RANGES: dict[str, tuple[int | None, int | None]] = {
    "vm.swappiness": (0, 200),
    "vm.page-cluster": (0, 31),
    "vm.dirty_ratio": (0, 100),
    "vm.dirty_background_ratio": (0, 100),
    "vm.dirty_bytes": (0, None),
    "vm.dirty_background_bytes": (0, None),
    "vm.dirty_expire_centisecs": (0, None),
    "vm.dirty_writeback_centisecs": (0, None),
    "vm.vfs_cache_pressure": (0, None),
    "vm.overcommit_memory": (0, 2),
    "vm.overcommit_ratio": (0, None),
    "vm.min_free_kbytes": (0, None),
    "vm.watermark_scale_factor": (1, 3000),
    "vm.watermark_boost_factor": (0, None),
    "vm.zone_reclaim_mode": (0, 7),
    "vm.compaction_proactiveness": (0, 100),
    "vm.nr_hugepages": (0, None),
    "vm.nr_overcommit_hugepages": (0, None),
    "vm.max_map_count": (0, 2**31 - 1),
    "vm.panic_on_oom": (0, 2),
    "vm.oom_kill_allocating_task": (0, 1),
    "vm.stat_interval": (1, None),
    "vm.laptop_mode": (0, None),
    "kernel.numa_balancing": (0, 3),
    "kernel.nmi_watchdog": (0, 1),
    "kernel.watchdog": (0, 1),
    "kernel.soft_watchdog": (0, 1),
    "kernel.watchdog_thresh": (0, 60),
    "kernel.sched_autogroup_enabled": (0, 1),
    "kernel.randomize_va_space": (0, 2),
    "kernel.kptr_restrict": (0, 2),
    "kernel.dmesg_restrict": (0, 1),
    "kernel.perf_event_paranoid": (-1, 4),
    "kernel.sysrq": (0, 511),
    "kernel.timer_migration": (0, 1),
    "kernel.yama.ptrace_scope": (0, 3),
    "kernel.unprivileged_bpf_disabled": (0, 2),
    "kernel.split_lock_mitigate": (0, 1),
    "net.core.somaxconn": (0, 2**31 - 1),
    "net.ipv4.tcp_fastopen": (0, None),
    "fs.file-max": (0, None),
    "fs.inotify.max_user_watches": (1, None),
    "fs.inotify.max_user_instances": (1, None),
}


@lru_cache(maxsize=1)
def shipped() -> tuple[frozenset[str], tuple[str, ...]]:
    """The table: (exact names, patterns with ``*`` for an interface)."""
    names, patterns = set(), []
    for line in DATA.read_text().splitlines():
        name = line.split("\t", 1)[0].strip()
        if not name or name.startswith("#"):
            continue
        (patterns.append(name) if "*" in name else names.add(name))
    return frozenset(names), tuple(patterns)


def is_shipped(name: str) -> bool:
    names, patterns = shipped()
    return name in names or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def on_this_host(name: str, proc_sys: Path = PROC_SYS) -> bool:
    """Whether this kernel has the name (``/proc/sys/vm/swappiness`` for ``vm.swappiness``).

    sysctl(8) reads a dot as a slash, and a slash in a name as a dot (``net.ipv4.conf.eth0/1``)."""
    rel = name.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return (proc_sys / rel).exists()


def check(name: str, value, *, host: bool = False, proc_sys: Path = PROC_SYS) -> str | None:
    """The problem with one sysctl (a sentence naming it and the fix), or None."""
    if not is_shipped(name):
        names, _ = shipped()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        hint = f"did you mean `{close[0]}`?" if close else "check the spelling against `sysctl -a`"
        return (f"`{name}` is not a sysctl of Linux (not in Synapse's table of the kernel's documented and "
                f"seen names): `sysctl --system` would skip it; {hint}")
    if host and proc_sys.is_dir() and not on_this_host(name, proc_sys):
        return (f"`{name}` does not exist on this machine's kernel ({os.uname().release}: no "
                f"{proc_sys}/{name.replace('.', '/')}); remove it, or describe the target in machine.name and "
                "target if these parameters are for another machine")
    text = str(value).strip()
    if not text or "\n" in text or "#" in text:
        return f"`{name}`: {value!r} is not a sysctl value (one line, no comment)"
    bounds = RANGES.get(name)
    if bounds is not None:
        if not re.fullmatch(r"-?[0-9]+", text):
            return f"`{name}`: {value!r} is not a whole number"
        low, high = bounds
        n = int(text)
        if (low is not None and n < low) or (high is not None and n > high):
            span = f"{low}-{high}" if high is not None else f"{low} or more"
            return f"`{name}` = {n} is out of the kernel's range ({span}): the kernel refuses it"
    return None


# ---- generating the table ------------------------------------------------------------------------
_UNDERLINE = re.compile(r"^(=+|-+|~+|\^+)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_IFACE = re.compile(r"^net\.(ipv4|ipv6)\.(conf|neigh)\.([^.]+)\.(.+)$")


def names_from_proc_sys(proc_sys: Path = PROC_SYS) -> set[str]:
    out = set()
    for root, _dirs, files in os.walk(proc_sys):
        for f in files:
            rel = Path(root, f).relative_to(proc_sys)
            out.add(".".join(p.replace(".", "/") for p in rel.parts))
    return out


def _headings(text: str) -> list[str]:
    lines = text.splitlines()
    return [lines[i - 1].strip() for i in range(1, len(lines))
            if _UNDERLINE.match(lines[i]) and lines[i - 1].strip() and not _UNDERLINE.match(lines[i - 1])]


def names_from_docs(docs: Path) -> set[str]:
    """Names documented in one kernel tree's Documentation (admin-guide/sysctl and ip-sysctl)."""
    out: set[str] = set()
    sysctl = docs / "Documentation" / "admin-guide" / "sysctl"
    for rst, prefix in (("vm.rst", "vm"), ("kernel.rst", "kernel"), ("fs.rst", "fs"), ("user.rst", "user"),
                        ("abi.rst", "abi")):
        p = sysctl / rst
        if not p.exists():
            continue
        where = prefix
        for head in _headings(p.read_text(errors="replace")):
            m = re.search(r"/proc/sys/([a-z0-9_]+)(?:/([a-z0-9_/]+))?", head)
            if m:  # "4. /proc/sys/fs/epoll - ...": the names below live in that directory
                where = ".".join(x for x in (m.group(1), (m.group(2) or "").strip("/").replace("/", ".")) if x)
                continue
            head = head.split(" (")[0]  # "powersave-nap (PPC only)"
            for word in re.split(r"\s*(?:,|&|\band\b)\s*", head):
                if _NAME.match(word) and word not in {prefix, "documentation"}:
                    out.add(f"{where}.{word}")
    p = sysctl / "net.rst"
    if p.exists():
        where = None
        for head in _headings(p.read_text(errors="replace")):
            m = re.match(r"^[0-9.\s]*/proc/sys/net/([a-z0-9_]+)", head)
            if m:
                where = m.group(1)
            elif where and _NAME.match(head):
                out.add(f"net.{where}.{head}")
    p = docs / "Documentation" / "networking" / "ip-sysctl.rst"
    if p.exists():
        proto, where = "ipv4", "net.ipv4"
        for line in p.read_text(errors="replace").splitlines():
            bare = line.strip().strip("`").rstrip(":").strip("`")
            m = re.match(r"^/?proc/sys/net/([a-z0-9_]+)/\*", bare)
            if m:  # "/proc/sys/net/ipv6/* Variables"
                proto = m.group(1)
                where = f"net.{proto}"
                continue
            m = re.fullmatch(r"(conf|neigh)/[a-z]+/\*|(icmp)/\*", bare)
            if m:  # "``conf/interface/*``": per-interface names follow
                where = f"net.{proto}.{m.group(1)}.*" if m.group(1) else f"net.{proto}.icmp"
                continue
            m = re.match(r"^([a-z][a-z0-9_/{},]*) - [A-Z]", line)
            if not m:
                continue
            name = m.group(1)
            if "/" in name:  # "neigh/default/gc_thresh1", "conf/all/forwarding"
                parts = name.split("/")
                if parts[0] in ("conf", "neigh") and len(parts) == 3:
                    parts[1] = "*"
                out.add(".".join(["net", proto, *parts]))
            elif _NAME.match(name):
                out.add(f"{where}.{name}")
    return out


def generalise(names: set[str]) -> set[str]:
    """Per-interface names (``net.ipv4.conf.eth0.rp_filter``) -> ``net.ipv4.conf.*.rp_filter``."""
    out = set()
    for n in names:
        m = _IFACE.match(n)
        out.add(f"net.{m.group(1)}.{m.group(2)}.*.{m.group(4)}" if m else n)
    return out


def write_table(docs: list[Path], proc_sys: Path = PROC_SYS, out: Path = DATA) -> int:
    sources: dict[str, list[str]] = {}
    for d in docs:
        version = re.search(r"(\d+\.\d+)", d.name)
        label = f"docs-{version.group(1) if version else d.name}"
        for n in generalise(names_from_docs(d)):
            sources.setdefault(n, []).append(label)
    host = f"proc-{os.uname().release}"
    for n in generalise(names_from_proc_sys(proc_sys)):
        sources.setdefault(n, []).append(host)
    head = ["# sysctl names Synapse knows (aios_lib/params/sysctl_names.py): name<TAB>where it was seen.",
            "# docs-X.Y: documented in Linux X.Y Documentation/admin-guide/sysctl/*.rst or networking/ip-sysctl.rst;",
            "# proc-R: a file under /proc/sys of kernel R. * stands for any interface. Regenerate with",
            "# `python -m aios_lib.params.sysctl_names --docs <linux-source-6.1> <linux-source-6.12>`."]
    out.write_text("\n".join(head + [f"{n}\t{' '.join(s)}" for n, s in sorted(sources.items())]) + "\n")
    return len(sources)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", nargs="*", type=Path, default=[], help="extracted kernel source trees")
    ap.add_argument("--proc-sys", type=Path, default=PROC_SYS)
    args = ap.parse_args()
    print(write_table(args.docs, args.proc_sys), "names written to", DATA)
