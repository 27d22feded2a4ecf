"""systemd units in a root or live: masks, the default target, a serial autologin."""
from __future__ import annotations

import os
from pathlib import Path

from ..facts import gather, systemd
from ._conf import host_path, read_text
from .base import Setting

UNIT_DIRS = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"]


def _readlink(runner, path: Path) -> str | None:
    """The target of a symlink in a root directory (read directly: no process needed)."""
    try:
        return os.readlink(path)
    except OSError:
        return None


def unit_exists(runner, root: Path | None, unit: str) -> bool:
    """A unit file for ``unit`` exists in the root (a mask symlink counts as existing)."""
    if root is None:
        return gather(runner, systemd.unit_known(unit))
    return any(os.path.lexists(host_path(root, "/" + d) / unit) for d in UNIT_DIRS)


def installed_units(root: Path, units: list[str]) -> list[str]:
    """The ``units`` a root has a real unit file for (a mask or alias symlink is not one), sorted."""
    dirs = ("usr/lib/systemd/system", "lib/systemd/system", "etc/systemd/system")
    return sorted({u for u in units for d in dirs
                   if (Path(root) / d / u).exists() and not (Path(root) / d / u).is_symlink()})


class MaskedUnits(Setting):
    """Mask the units of ``wanted`` that exist in the target; the others are listed, not created.

    ``present`` (after :meth:`resolve`) is what is masked; ``absent`` what the target lacks.
    With ``only_existing=False`` every wanted unit is masked, installed or not (phase 06: a mask
    also stops a package installed later from starting its unit). ``reason`` goes into the journal.
    """

    def __init__(self, wanted: list[str], only_existing: bool = True, reason: str | None = None):
        self.wanted = list(wanted)
        self.only_existing = only_existing
        self.reason = reason
        self.present: list[str] | None = None
        self.absent: list[str] = []
        self.name = "masked units"
        self.desired = None

    def resolve(self, runner, root):
        if not self.only_existing:
            self.present, self.absent = list(self.wanted), []
            self.desired = sorted(self.present)
            return
        if root is not None and not os.path.isdir(host_path(root, "/etc")):
            # plan mode: the root is not bootstrapped yet; the real run masks those that exist
            self.present, self.absent = list(self.wanted), []
            self.desired = sorted(self.present)
            self.note = "planned: only the units that exist after bootstrap are masked"
            return
        self.present = [u for u in self.wanted if unit_exists(runner, root, u)]
        self.absent = [u for u in self.wanted if u not in self.present]
        self.desired = sorted(self.present)
        self.note = ("not in the target, nothing to mask: " + ", ".join(self.absent)) if self.absent else ""

    def read(self, runner, root):
        if self.present is None:
            self.resolve(runner, root)
        if root is None:
            return sorted(u for u in self.present if gather(runner, systemd.unit_state(u)) == "masked")
        return sorted(u for u in self.present
                      if _readlink(runner, host_path(root, "/etc/systemd/system") / u) == "/dev/null")

    def parts(self, in_effect, planned):
        """One row per unit asked for: masked, planned, not installed (nothing to mask) or MISMATCH."""
        rows = []
        for u in self.wanted:
            if u in (self.absent or []):
                rows.append({"setting": f"mask {u}", "requested": "masked", "in effect": "not installed",
                             "status": "not installed", "note": "the unit is not in the target: nothing to mask"})
                continue
            masked = u in (in_effect or [])
            rows.append({"setting": f"mask {u}", "requested": "masked",
                         "in effect": "masked" if masked else ("planned" if planned else "not masked"),
                         "status": "ok" if masked else ("planned" if planned else "MISMATCH"),
                         "note": self.note if planned and self.note.startswith("planned") else ""})
        return rows

    def apply(self, runner, root):
        if self.present is None:
            self.resolve(runner, root)
        if not self.present:
            return
        argv = ["systemctl"] + ([f"--root={root}"] if root else []) + ["mask", *self.present]
        runner.change(argv, note=self.reason)


class DefaultTarget(Setting):
    def __init__(self, target: str = "multi-user.target"):
        self.desired = target
        self.name = "default target"

    def read(self, runner, root):
        if root is None:
            return gather(runner, systemd.DEFAULT_TARGET)
        link = _readlink(runner, host_path(root, "/etc/systemd/system/default.target"))
        return Path(link).name if link else None

    def apply(self, runner, root):
        runner.change(["systemctl"] + ([f"--root={root}"] if root else []) + ["set-default", self.desired])


class SerialAutologin(Setting):
    """A root autologin on a serial console for the first boot (a drop-in for serial-getty@)."""

    def __init__(self, tty: str = "ttyS0"):
        self.tty = tty
        self.path = f"/etc/systemd/system/serial-getty@{tty}.service.d/autologin.conf"
        self.desired = ("# Synapse: first-boot console (system.autologin_tty); remove after setting a password\n"
                        "[Service]\nExecStart=\n"
                        "ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM\n")
        self.name = f"autologin on {tty}"
        self.note = self.path

    def read(self, runner, root):
        return read_text(runner, root, self.path)

    def apply(self, runner, root):
        runner.write_file(host_path(root, self.path), self.desired, note=self.name)
