"""Phase 3: the custom kernel. Extended by the kernel phase."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section

#: The blueprint's table (section 3.1), as written there; the kernel phase reports what sticks.
BLUEPRINT_TABLE = {
    "SCHED_EEVDF": "y",
    "PREEMPT_VOLUNTARY": "y",
    "HZ": "300",
    "NO_HZ_FULL": "y",
    "CPU_FREQ_GOV_PERFORMANCE": "y",
    "TRANSPARENT_HUGEPAGE": "y",
    "NUMA": "n",
    "SPECULATION_MITIGATIONS": "n",
}


class Kernel(Section):
    enabled: bool = False
    source: Literal["debian-package", "git"] = "debian-package"
    version: str = "6.12"  # debian-package: linux-source-<version>
    git_url: str = "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"
    git_ref: str | None = None
    base_config: Literal["tinyconfig", "defconfig", "distro", "running"] = "tinyconfig"
    options: dict[str, str] = Field(default_factory=lambda: dict(BLUEPRINT_TABLE))
    localmodconfig: bool = False
    lsmod_file: str | None = None  # module list captured on the target (`lsmod > file`)
    jobs: int | Literal["auto"] = "auto"
