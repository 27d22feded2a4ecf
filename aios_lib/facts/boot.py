"""The EFI system partition and systemd-boot: boot entries (Boot Loader Specification type 1),
``loader.conf``, what the ESP holds, whether it is a clean FAT, and whether this machine's kernel
can mount FAT at all.

The ESP is read in two ways: as a directory (mounted, or staged in a tmpfs while a target is
built) with ``cat``/``find``, or as a FAT partition without mounting it, with mtools
(``mtype``/``mdir``; ``MTOOLS_SKIP_CHECK=1`` because mtools refuses FATs whose geometry it
does not like). The ``parse_*`` functions are pure; ``system/bootloader.py`` writes what these read.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .base import Fact

#: mtools on a FAT it would otherwise refuse over its geometry (as bootctl's FATs are)
MTOOLS = ("env", "MTOOLS_SKIP_CHECK=1")


# ---- pure parsers ----------------------------------------------------------------------------
def parse_bls(text: str | None) -> list[tuple[str, str]]:
    """Pure: a BLS type 1 entry as (key, value) pairs, in order (comments and blank lines left out)."""
    out = []
    for ln in (text or "").splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        k, _, v = ln.partition(" ")
        out.append((k, v.strip()))
    return out


def parse_bls_entry(text: str | None) -> dict[str, str]:
    """Pure: a BLS entry as {key: value}: ``options`` lines joined, otherwise the last line wins."""
    out: dict[str, str] = {}
    for k, v in parse_bls(text):
        out[k] = (out[k] + " " + v) if k in out and k == "options" else v
    return out


def root_ref_of(entry_text: str | None) -> str | None:
    """Pure: ``PARTUUID=...`` from the entry's ``root=`` word."""
    for k, v in parse_bls(entry_text):
        if k == "options":
            for w in v.split():
                if w.startswith("root="):
                    return w[len("root="):]
    return None


def parse_loader_conf(text: str | None) -> dict[str, str]:
    """Pure: loader.conf as {key: value} (``timeout 0`` -> {"timeout": "0"})."""
    return dict(re.findall(r"^(\w[\w-]*)\s+(.*)$", text or "", re.M))


def parse_loader_default(text: str | None) -> str | None:
    """Pure: the ``default`` of a loader.conf (an entry file name or a glob), None without one."""
    for ln in (text or "").splitlines():
        if ln.strip().startswith("default "):
            return ln.split(None, 1)[1].strip()
    return None


def parse_mdir(text: str | None) -> list[str]:
    """Pure: file and directory names from `mdir -b -/ -i IMG ::/` (one path per line)."""
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip().startswith("::/")]


def parse_entry_names(mdir_text: str | None) -> list[str]:
    """Pure: the ``*.conf`` file names of `mdir -b -i IMG ::/loader/entries`."""
    return [Path(ln.strip()).name for ln in (mdir_text or "").splitlines() if ln.strip().endswith(".conf")]


def parse_filesystems(text: str | None) -> list[str]:
    """Pure: the file system types of /proc/filesystems (``nodev`` column left out)."""
    return [ln.split()[-1] for ln in (text or "").splitlines() if ln.split()]


def _exited_0(o: Mapping[str, Any], key: str) -> bool:
    """Whether the status command ``key`` exited 0 (its code may come as a number or as text)."""
    return str(o.get(f"{key}.rc")) == "0"


# ---- the ESP as a directory ------------------------------------------------------------------
def esp_dir(efi: str | Path, entry: str) -> Fact:
    """What the ESP at ``efi`` holds: the entry ``loader/entries/<entry>`` (parsed), loader.conf
    (text and parsed) and every file, relative to ``efi``."""
    efi = str(efi)

    def parse(o: Mapping[str, str]) -> dict[str, Any]:
        files = sorted(str(Path(p).relative_to(efi)) for p in (o.get("files") or "").split()
                       if p.startswith(efi))
        conf = o.get("loader_conf") or ""
        return {"entry": parse_bls_entry(o.get("entry")), "loader_conf": conf,
                "loader": parse_loader_conf(conf), "files": files}

    return Fact("esp_dir", {"entry": ("cat", f"{efi}/loader/entries/{entry}"),
                            "loader_conf": ("cat", f"{efi}/loader/loader.conf"),
                            "files": ("find", efi, "-type", "f")},
                parse=parse, optional=frozenset({"entry", "loader_conf", "files"}))


# ---- the ESP as a FAT partition (no mount) ---------------------------------------------------
def fat_check(device: str) -> Fact:
    """``fsck.fat -n`` (read-only): ``{"ok": clean, "report": its output}``."""
    return Fact("fat_check", {"fsck": ("fsck.fat", "-n", device)},
                parse=lambda o: {"ok": _exited_0(o, "fsck"),
                                 "report": (o.get("fsck") or "") + (o.get("fsck.stderr") or "")},
                status=frozenset({"fsck"}))


def esp_listing(device: str) -> Fact:
    """Every file and directory on the FAT partition ``device`` (mdir, no mount)."""
    return Fact("esp_listing", {"mdir": (*MTOOLS, "mdir", "-/", "-b", "-i", device, "::/")},
                parse=lambda o: parse_mdir(o.get("mdir")), optional=frozenset({"mdir"}))


def esp_loader(device: str) -> Fact:
    """loader.conf on the FAT partition ``device`` and the entries it has:
    ``{"loader_conf": text, "default": name or None, "entries": [file names]}``."""
    def parse(o: Mapping[str, str]) -> dict[str, Any]:
        conf = o.get("loader_conf") or ""
        return {"loader_conf": conf, "default": parse_loader_default(conf),
                "entries": parse_entry_names(o.get("entries"))}

    return Fact("esp_loader", {"loader_conf": (*MTOOLS, "mtype", "-i", device, "::/loader/loader.conf"),
                               "entries": (*MTOOLS, "mdir", "-b", "-i", device, "::/loader/entries")},
                parse=parse, optional=frozenset({"loader_conf", "entries"}))


def esp_entry(device: str, name: str) -> Fact:
    """The text of ``loader/entries/<name>`` on the FAT partition ``device`` ("" when it is absent)."""
    return Fact("esp_entry", {"entry": (*MTOOLS, "mtype", "-i", device, f"::/loader/entries/{name}")},
                parse=lambda o: o.get("entry") or "", optional=frozenset({"entry"}))


# ---- this machine ----------------------------------------------------------------------------
def _vfat(o: Mapping[str, Any]) -> bool:
    return "vfat" in parse_filesystems(o.get("filesystems")) or _exited_0(o, "modprobe")


#: can this machine's kernel mount FAT (the ESP)? Built in, loaded, or a module it could load.
#: No on the development machine: the ESP is then staged in a tmpfs and copied with mtools.
VFAT = Fact("vfat", {"filesystems": ("cat", "/proc/filesystems"), "modprobe": ("modprobe", "-n", "-q", "vfat")},
            parse=_vfat, optional=frozenset({"filesystems"}), status=frozenset({"modprobe"}))
