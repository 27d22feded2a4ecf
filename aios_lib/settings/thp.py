"""Transparent huge pages: the mode after boot (tmpfiles.d in a root, sysfs when live).

The kernel command line's ``transparent_hugepage=`` sets the boot default; the tmpfiles.d line
keeps the mode even when the command line is edited, and is what a root directory can hold.
"""
from __future__ import annotations

from ..facts.kernel import bracketed
from ._conf import host_path, read_text
from .base import Setting

SYSFS = "/sys/kernel/mm/transparent_hugepage/enabled"
PATH = "/etc/tmpfiles.d/synapse-thp.conf"


def parse_tmpfiles_mode(text: str | None) -> str | None:
    for ln in (text or "").splitlines():
        parts = ln.split()
        if len(parts) >= 7 and parts[0] in ("w", "w+") and parts[1] == SYSFS:
            return parts[6]
    return None


class ThpMode(Setting):
    def __init__(self, mode: str):
        self.desired = mode
        self.name = "transparent hugepages"
        self.note = f"{PATH} (boot) / {SYSFS}"

    def read(self, runner, root):
        if root is None:
            return bracketed(read_text(runner, None, SYSFS))  # always [madvise] never -> madvise
        return parse_tmpfiles_mode(read_text(runner, root, PATH))

    def apply(self, runner, root):
        if root is None:
            runner.write_file(SYSFS, self.desired + "\n", note=self.name)
        else:
            runner.write_file(host_path(root, PATH),
                              f"# Synapse: THP mode at boot (system.thp)\nw {SYSFS} - - - - {self.desired}\n",
                              note=self.name)
