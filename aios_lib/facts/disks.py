"""Block devices (lsblk JSON) and which disk holds the running root filesystem."""
from __future__ import annotations

import json
from typing import Any, Mapping

from .base import Fact

LSBLK_COLS = "NAME,PATH,MODEL,SERIAL,SIZE,ROTA,TRAN,TYPE,RM,MOUNTPOINTS,FSTYPE"
#: util-linux < 2.37 has MOUNTPOINT (one) but not MOUNTPOINTS
LSBLK_COLS_OLD = "NAME,PATH,MODEL,SERIAL,SIZE,ROTA,TRAN,TYPE,RM,MOUNTPOINT,FSTYPE"
#: whole-disk devices that are never an install target
VIRTUAL_PREFIXES = ("zram", "loop", "ram", "nbd", "sr", "fd", "md", "dm-")


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if v is None:
        return None
    return str(v).strip() in ("1", "true", "True")


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _mounts(dev: Mapping[str, Any]) -> list[str]:
    mps = dev.get("mountpoints")
    if mps is None:
        mps = [dev.get("mountpoint")]
    return [m for m in (mps or []) if m]


def _walk(dev: Mapping[str, Any]):
    yield dev
    for child in dev.get("children") or []:
        yield from _walk(child)


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    try:
        data = json.loads(o.get("lsblk") or "{}")
    except ValueError:
        data = {}
    root_source = (o.get("root") or "").strip().split("\n")[0].strip() or None
    disks = []
    for dev in data.get("blockdevices", []):
        all_mounts = sorted({m for d in _walk(dev) for m in _mounts(d)})
        paths = {d.get("path") or f"/dev/{d.get('name')}" for d in _walk(dev)}
        name = dev.get("name") or ""
        holds_root = "/" in all_mounts or (root_source in paths if root_source else False)
        disks.append({
            "name": name,
            "path": dev.get("path") or f"/dev/{name}",
            "type": dev.get("type"),
            "model": (dev.get("model") or "").strip() or None,
            "serial": (dev.get("serial") or "").strip() or None,
            "size_bytes": _int(dev.get("size")),
            "rotational": _bool(dev.get("rota")),
            "transport": dev.get("tran"),
            "removable": _bool(dev.get("rm")),
            "virtual_device": name.startswith(VIRTUAL_PREFIXES),
            "partitions": sum(1 for d in _walk(dev) if d.get("type") == "part"),
            "mountpoints": all_mounts,
            "fstypes": sorted({d.get("fstype") for d in _walk(dev) if d.get("fstype")}),
            "holds_root": holds_root,
        })
    root_disk = next((d["path"] for d in disks if d["holds_root"]), None)
    return {"disks": disks, "root_source": root_source, "root_disk": root_disk}


FACT = Fact(
    name="disks",
    commands={
        "lsblk": ("lsblk", "-J", "-b", "-o", LSBLK_COLS),
        "root": ("findmnt", "-n", "-o", "SOURCE", "/"),
    },
    parse=parse,
    optional=frozenset({"root"}),
    fallbacks={"lsblk": ("lsblk", "-J", "-b", "-o", LSBLK_COLS_OLD)},
)
