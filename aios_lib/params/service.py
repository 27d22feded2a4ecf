"""Phase 6: the inference service and hardening. Extended by the hardening phase."""
from __future__ import annotations

from pydantic import Field

from .base import Section


class Service(Section):
    enabled: bool = False
    user: str = "ai"
    port: int = Field(8080, ge=1, le=65535)
    memory_reserve_gib: float = Field(4.0, ge=0.5)  # MemoryHigh = RAM - reserve
    nice: int = Field(-5, ge=-20, le=19)
    oom_score_adjust: int = Field(-500, ge=-1000, le=1000)
    mlock: bool = False
    ssh: bool = False  # local-only by default
    read_only_root: bool = True
