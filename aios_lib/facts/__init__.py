"""Facts about a machine: one module per subject, each a command plus a pure parse function.

``survey(runner)`` gathers them all (cpu, memory, numa, disks, firmware, virt, kernel, gpu).
"""
from .base import Fact, gather, gather_outputs
from .survey import FACTS, survey

__all__ = ["FACTS", "Fact", "gather", "gather_outputs", "survey"]
