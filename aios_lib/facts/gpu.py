"""GPUs: PCI display/3D controllers (lspci -mm -nn) and, where the driver is there, nvidia-smi
(the survey's names and sizes; :data:`USAGE`, the memory in use and the load the panel polls)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from .base import Fact


def _split_id(text: str) -> tuple[str, str | None]:
    """'VGA compatible controller [0300]' -> ('VGA compatible controller', '0300')."""
    m = re.match(r"^(.*?)\s*\[([0-9a-fA-F]{4})\]$", text.strip())
    return (m.group(1), m.group(2).lower()) if m else (text.strip(), None)


def parse_lspci_mm(text: str | None) -> list[dict[str, Any]]:
    devices = []
    for line in (text or "").splitlines():
        try:
            parts = shlex.split(line)
        except ValueError:
            continue
        if len(parts) < 4:
            continue
        slot, cls, vendor, device = parts[:4]
        cls_name, cls_id = _split_id(cls)
        vendor_name, vendor_id = _split_id(vendor)
        dev_name, dev_id = _split_id(device)
        devices.append({"slot": slot, "class": cls_name, "class_id": cls_id, "vendor": vendor_name,
                        "vendor_id": vendor_id, "device": dev_name, "device_id": dev_id})
    return devices


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    pci = parse_lspci_mm(o.get("lspci"))
    # PCI class 03xx: display controllers (VGA 0300, XGA 0301, 3D 0302, other 0380)
    gpus = [d for d in pci if (d["class_id"] or "").startswith("03")]
    nvidia = []
    for line in (o.get("nvidia_smi") or "").splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 3 and cells[0]:
            nvidia.append({"name": cells[0], "memory": cells[1], "driver": cells[2]})
    return {"gpus": gpus, "nvidia": nvidia, "count": len(gpus), "pci_devices": len(pci),
            "lspci_read": bool(pci)}


FACT = Fact(
    name="gpu",
    commands={
        "lspci": ("lspci", "-mm", "-nn"),
        "nvidia_smi": ("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"),
    },
    parse=parse,
    optional=frozenset({"lspci", "nvidia_smi"}),
)


# ---- what the GPUs are doing (the panel polls it) --------------------------------------------
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                "--format=csv,noheader,nounits"]


@dataclass
class GpuView:
    index: int
    name: str
    used: int  # bytes
    total: int
    util: float | None = None


def parse_nvidia_smi(text: str) -> list[GpuView]:
    """``nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu
    --format=csv,noheader,nounits`` -> GPUs (memory in MiB on the wire, bytes here)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue

        def num(s):
            try:
                return float(s)
            except ValueError:
                return None

        used, total = num(parts[2]), num(parts[3])
        if used is None or total is None:
            continue
        out.append(GpuView(int(parts[0]), parts[1], int(used * 2**20), int(total * 2**20),
                           num(parts[4]) if len(parts) > 4 else None))
    return out


def _usage(o: Mapping[str, str]) -> list[GpuView] | None:
    return parse_nvidia_smi(o.get("query") or "") if o.get("query.rc") == 0 else None


#: memory in use and utilisation per GPU; None where nvidia-smi is missing or fails
USAGE = Fact(name="nvidia-smi usage", commands={"query": tuple(NVIDIA_QUERY)}, parse=_usage,
             status=frozenset({"query"}), timeouts={"query": 5})
