"""The kernel command line of a boot entry: ``root=``, ``rw``/``ro`` and the parameters' tokens.

The tokens were checked when the parameter file loaded (:mod:`aios_lib.params.kernel_cmdline`:
known names and values; ``mitigations=off`` only with ``machine.trusted_offline``), so this
module only assembles them; the warnings it hands on are the model's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# CmdlineError: re-exported for callers that still catch it (nothing here raises it any more)
from ..params.kernel_cmdline import CmdlineError, split_token

__all__ = ["Cmdline", "CmdlineError", "assemble", "build_cmdline", "parse_cmdline"]


@dataclass
class Cmdline:
    """The command line of the boot entry, with the parameters' warnings about it."""

    tokens: list[str]
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(self.tokens)


def assemble(tokens: list[str], root_ref: str = "PARTUUID=<root>", rw: bool = True) -> list[str]:
    """``root=<root_ref>`` and ``rw`` (or ``ro``) in front of ``tokens``, unless they name them already."""
    names = {split_token(t)[0] for t in tokens}
    head = ([] if "root" in names else [f"root={root_ref}"]) + ([] if names & {"rw", "ro"} else ["rw" if rw else "ro"])
    return head + list(tokens)


def build_cmdline(params, root_ref: str = "PARTUUID=<root>", rw: bool = True) -> Cmdline:
    """``root=<root_ref> rw`` plus ``params.system.kernel_cmdline`` (validated at load), with its warnings."""
    return Cmdline(assemble(params.system.kernel_cmdline, root_ref, rw),
                   params.warnings_for("system.kernel_cmdline"))


def parse_cmdline(text: str, ignore=("initrd", "BOOT_IMAGE")) -> list[str]:
    """/proc/cmdline as tokens, without what the boot loader adds by itself (``initrd=``)."""
    return [t for t in text.split() if split_token(t)[0] not in ignore]
