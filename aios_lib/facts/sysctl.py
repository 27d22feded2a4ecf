"""The running kernel's sysctl values (``sysctl -n NAME``)."""
from __future__ import annotations

from typing import Mapping

from .base import Fact


def parse_value(o: Mapping[str, str]) -> str | None:
    """The value ``sysctl -n`` printed; None when the name is unknown (or not readable here)."""
    return (o.get("value") or "").strip() if o.get("value.rc") == 0 else None


def value(name: str) -> Fact:
    return Fact(name=f"sysctl {name}", commands={"value": ("sysctl", "-n", name)}, parse=parse_value,
                status=frozenset({"value"}))
