"""Block devices, partitions, loop devices and mounts: is a disk in use, what holds the running
system, what a killed run left behind, a partition's UUIDs and a GPT's partitions.

Each function returns a :class:`~aios_lib.facts.base.Fact` for one device or image (the commands
name it); the ``parse_*`` functions are pure and tested on captured output
(``tests/fixtures/image/``). ``blkid -p`` reads the superblocks itself, so UUIDs are read
without a udev database (this development machine, most containers).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .base import Fact


# ---- pure parsers ----------------------------------------------------------------------------
def parse_lsblk_in_use(lsblk_json: str, swaps: str = "") -> list[str]:
    """Pure: reasons a disk (lsblk -J -o NAME,PATH,MOUNTPOINTS output) must not be erased."""
    reasons = []
    try:
        data = json.loads(lsblk_json or "{}")
    except json.JSONDecodeError:
        return ["lsblk output unreadable"]
    swap_devs = {ln.split()[0] for ln in swaps.splitlines()[1:] if ln.strip()}

    def walk(node):
        mps = [m for m in (node.get("mountpoints") or [node.get("mountpoint")]) if m]
        path = node.get("path") or f"/dev/{node.get('name')}"
        for m in mps:
            reasons.append(f"{path} is mounted on {m}")
        if path in swap_devs:
            reasons.append(f"{path} is an active swap device")
        for c in node.get("children") or []:
            walk(c)

    for dev in data.get("blockdevices", []):
        walk(dev)
    return reasons


def disk_of(lsblk_pkname_output: str) -> str:
    """Pure: the top-level disk name from `lsblk -s -n -o NAME,TYPE <dev>` (inverse tree)."""
    names = [ln.split() for ln in lsblk_pkname_output.splitlines() if ln.strip()]
    disks = [n[0].lstrip("`|-─└├│ ") for n in names if len(n) >= 2 and n[1] == "disk"]
    return disks[-1] if disks else ""


def parse_losetup_j(text: str) -> list[str]:
    """Pure: loop devices from `losetup -j FILE` ("/dev/loop0: []: (/path)")."""
    return [ln.split(":", 1)[0] for ln in text.splitlines() if ln.startswith("/dev/loop")]


def parse_findmnt_targets(text: str, under: str) -> list[str]:
    """Pure: mount points at or below ``under`` from `findmnt -rn -o TARGET`, deepest first."""
    under = under.rstrip("/")
    hits = [t.replace("\\x20", " ") for t in text.split() if t == under or t.startswith(under + "/")]
    return sorted(set(hits), key=lambda t: t.count("/"), reverse=True)


def parse_blkid_export(text: str) -> dict[str, str]:
    """Pure: `blkid -o export DEV` -> {"UUID": ..., "PARTUUID": ..., "TYPE": ...}.

    ``blkid -p`` (probing the device itself) names the partition's UUID ``PART_ENTRY_UUID``;
    it is also given as ``PARTUUID``, the name the other modes and the kernel use."""
    out = {}
    for ln in text.splitlines():
        if "=" in ln:
            k, v = ln.split("=", 1)
            out[k.strip()] = v.strip()
    if "PART_ENTRY_UUID" in out and "PARTUUID" not in out:
        out["PARTUUID"] = out["PART_ENTRY_UUID"]
    return out


def parse_sfdisk_json(text: str) -> list[dict]:
    """Pure: ``sfdisk -J IMG`` -> partitions [{node, start, size, type, name, uuid}]."""
    if not (text or "").strip():
        return []
    pt = json.loads(text).get("partitiontable", {})
    return list(pt.get("partitions", []))


def parse_partuuid(text: str) -> str | None:
    """Pure: ``sfdisk --part-uuid IMG N`` -> the partition's UUID, lower case as the kernel shows it."""
    return (text or "").strip().lower() or None


# ---- facts -----------------------------------------------------------------------------------
def _in_use(o: Mapping[str, str]) -> dict[str, Any]:
    try:
        tree = json.loads(o.get("lsblk") or "{}")
    except json.JSONDecodeError:
        tree = None
    return {"reasons": parse_lsblk_in_use(o.get("lsblk") or "", o.get("swaps") or ""), "lsblk": tree}


def disk_in_use(device: str) -> Fact:
    """Is ``device`` (or a partition of it) mounted or an active swap? ``{"reasons", "lsblk"}``."""
    return Fact("disk_in_use", {"lsblk": ("lsblk", "-J", "-o", "NAME,PATH,TYPE,SIZE,MODEL,MOUNTPOINTS", device),
                                "swaps": ("cat", "/proc/swaps")},
                parse=_in_use, optional=frozenset({"lsblk", "swaps"}))


#: the device the running system's / is mounted from ("" when it is not a block device)
ROOT_SOURCE = Fact("root_source", {"source": ("findmnt", "-n", "-o", "SOURCE", "/")},
                   parse=lambda o: (o.get("source") or "").strip(), optional=frozenset({"source"}))


def disk_holding(device: str) -> Fact:
    """The top-level disk that holds ``device`` (a partition, an LVM volume ...): its kernel name."""
    return Fact("disk_holding", {"tree": ("lsblk", "-s", "-n", "-o", "NAME,TYPE", device)},
                parse=lambda o: disk_of(o.get("tree") or ""), optional=frozenset({"tree"}))


def mount_targets(under: str) -> Fact:
    """Mount points at or below ``under``, deepest first."""
    return Fact("mount_targets", {"targets": ("findmnt", "-rn", "-o", "TARGET")},
                parse=lambda o: parse_findmnt_targets(o.get("targets") or "", under),
                optional=frozenset({"targets"}))


def loops_of(image: str) -> Fact:
    """The loop devices ``image`` is attached to."""
    return Fact("loops_of", {"loops": ("losetup", "-j", image)},
                parse=lambda o: parse_losetup_j(o.get("loops") or ""), optional=frozenset({"loops"}))


def blkid(device: str) -> Fact:
    """UUID, PARTUUID, TYPE, LABEL ... of ``device`` from its superblock ({} when it has none)."""
    return Fact("blkid", {"export": ("blkid", "-p", "-o", "export", device)},
                parse=lambda o: parse_blkid_export(o.get("export") or ""), optional=frozenset({"export"}))


def partitions(image: str) -> Fact:
    """The GPT partitions of a disk or image file ([] when it has no partition table)."""
    return Fact("partitions", {"table": ("sfdisk", "-J", image)},
                parse=lambda o: parse_sfdisk_json(o.get("table") or ""), optional=frozenset({"table"}))


def partuuid(image: str, number: int) -> Fact:
    """The GPT UUID of partition ``number`` of a disk or image file (None when it cannot be read)."""
    return Fact("partuuid", {"uuid": ("sfdisk", "--part-uuid", image, str(number))},
                parse=lambda o: parse_partuuid(o.get("uuid") or ""), optional=frozenset({"uuid"}))


def partition_table(device: str) -> Fact:
    """``parted print`` of a disk or image in MiB: shown to the reader, not parsed."""
    return Fact("partition_table", {"print": ("parted", "-s", device, "unit", "MiB", "print")},
                parse=lambda o: o.get("print") or "", optional=frozenset({"print"}))
