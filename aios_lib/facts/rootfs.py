"""A root file system, this machine's or a target's being built: its apt mirror, the kernels it
has modules for, what its initrd holds.

The ``parse_*`` functions are pure and tested on captured output (``tests/fixtures/image/``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from .base import Fact


def parse_apt_mirror(text: str) -> str | None:
    """Pure: the main Debian mirror from sources.list or deb822 .sources text."""
    for ln in text.splitlines():
        ln = ln.strip()
        m = re.match(r"^URIs:\s*(\S+)", ln)
        if m and "security" not in m.group(1):
            return m.group(1)
        m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", ln)
        if m and "security" not in m.group(1):
            return m.group(1)
    return None


def parse_kernel_versions(ls_output: str) -> list[str]:
    """Pure: kernel versions from `ls /lib/modules` (newest last, by version order)."""
    def key(v):
        return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]
    vers = [v for v in ls_output.split() if re.match(r"^\d+\.\d+", v)]
    return sorted(vers, key=key)


def has_volatile_root(lsinitrd_text: str | None) -> bool:
    """Pure: does ``lsinitrd`` list systemd-volatile-root (the unit that honours systemd.volatile=)?"""
    return "systemd-volatile-root" in (lsinitrd_text or "")


def apt_sources(files: list[str]) -> Fact:
    """The main Debian mirror named in ``files`` (sources.list, *.sources, *.list; None without one)."""
    commands = {f"source{i}": ("cat", f) for i, f in enumerate(files)}

    def parse(o: Mapping[str, str]) -> str | None:
        return parse_apt_mirror("".join((o.get(k) or "") + "\n" for k in commands if o.get(k)))

    return Fact("apt_sources", commands, parse=parse, optional=frozenset(commands))


def host_apt_sources() -> list[str]:
    """This machine's apt source files, in the order apt reads them."""
    d = Path("/etc/apt/sources.list.d")
    return ["/etc/apt/sources.list", *sorted(str(p) for p in d.glob("*.sources")),
            *sorted(str(p) for p in d.glob("*.list"))]


def kernel_versions(root: str | Path) -> Fact:
    """The kernel versions ``root`` has modules for (``usr/lib/modules``), newest last."""
    return Fact("kernel_versions", {"modules": ("ls", str(Path(root) / "usr/lib/modules"))},
                parse=lambda o: parse_kernel_versions(o.get("modules") or ""), optional=frozenset({"modules"}))


def initrd_listing(root: str | Path) -> Fact:
    """``lsinitrd`` of the target's initrds, run inside ``root``:
    ``{"listing": text, "volatile_root": has systemd-volatile-root}``."""
    return Fact("initrd_listing", {"lsinitrd": ("sh", "-c", "lsinitrd /boot/initrd.img-* 2>/dev/null || true")},
                parse=lambda o: {"listing": o.get("lsinitrd") or "",
                                 "volatile_root": has_volatile_root(o.get("lsinitrd"))},
                optional=frozenset({"lsinitrd"}), root=str(root))
