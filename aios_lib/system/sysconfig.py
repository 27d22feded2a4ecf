"""Configure a bootstrapped root (blueprint 2.1 step 5, sections 1.2, 1.5, 5.1, 5.3).

Each item is a :class:`~aios_lib.settings.Setting` applied to the target root and read back from
it, so the notebook shows requested vs in effect: fstab by UUID, hostname, a serial autologin for
the first boot, the default target, masked units (only those that exist; the record lists the
others), journald in RAM, zram swap, THP mode, sysctl values. The guest boot (vm.py) then checks
the same things from inside the running system.

fstab: ``genfstab -U`` is tried first (the blueprint's command). Without a udev database (this
development machine, most containers) it writes ``/dev/loopXp2`` rather than ``UUID=``, and the
staged ESP shows up as a tmpfs; the fallback builds every line from ``blkid -p``, which reads the
superblocks directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .disk import Devices, read_uuids
from ..params.mount_options import fstab_options
from ..core.paths import PACKAGE_DIR
from ..core.runner import Runner
from ..settings import Setting, SettingResult, apply_settings
from ..settings.journald import Journald
from ..settings.rootfiles import EmptyMachineId, Fstab, Hostname, Hosts
from ..settings.sysctl import Sysctl
from ..settings.thp import ThpMode
from ..settings.units import DefaultTarget, MaskedUnits, SerialAutologin
from ..settings.zram import ZramGenerator

ESP_MOUNT = "/efi"
ESP_OPTIONS = "noatime,fmask=0077,dmask=0077,nofail,x-systemd.device-timeout=10s"
GUEST_CHECK = PACKAGE_DIR / "data" / "guest-check.sh"
GUEST_CHECK_PATH = "/usr/local/libexec/aios-guest-check"
GUEST_CHECK_DIR = "/usr/local/lib/aios/checks.d"
#: the SMBIOS OEM string QEMU passes to make the check run (a real machine never has it)
from .vm import GUEST_CHECK_TOKEN  # noqa: E402
GUEST_CHECK_UNIT = f"""\
# Synapse: self-check for verification boots under QEMU (runs only with the SMBIOS OEM string
# "{GUEST_CHECK_TOKEN}"). Oneshot: it hands the check to a transient unit and ends, so the boot can
# finish; the check waits for that, prints its findings on ttyS1 (QEMU's report file) and powers off.
[Unit]
Description=Synapse guest self-check (QEMU verification boots only)
After=multi-user.target

[Service]
Type=oneshot
ExecCondition=/bin/grep -aqs {GUEST_CHECK_TOKEN} /sys/firmware/dmi/tables/DMI
ExecStart=/usr/bin/systemd-run --no-block --unit=aios-guest-check-run {GUEST_CHECK_PATH}

[Install]
WantedBy=multi-user.target
"""


@dataclass
class FstabPlan:
    content: str
    source: str  # "genfstab -U" or "blkid (no udev database)"


def fstab_text(uuids: dict, fs: str, mount_options: list[str]) -> str:
    """``mount_options``: ``system.mount_options``, normalised for ``fs`` when the parameters loaded."""
    root_pass = "1" if fs == "ext4" else "0"  # fsck.xfs does nothing; xfs repairs at mount
    return ("# /etc/fstab: written by Synapse (base-system phase), by UUID\n"
            "# <file system>\t<dir>\t<type>\t<options>\t<dump>\t<pass>\n"
            f"UUID={uuids['root'].get('UUID')}\t/\t{fs}\t{fstab_options(mount_options)}\t0\t{root_pass}\n"
            f"UUID={uuids['esp'].get('UUID')}\t{ESP_MOUNT}\tvfat\t{ESP_OPTIONS}\t0\t2\n")


def parse_genfstab(text: str) -> dict[str, tuple[str, str, str]]:
    """Pure: {mount point: (source, type, options)} from genfstab output."""
    out = {}
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) >= 4 and not ln.lstrip().startswith("#"):
            out[parts[1]] = (parts[0], parts[2], parts[3])
    return out


def plan_fstab(runner: Runner, root: Path, devices: Devices, fs: str, mount_options: list[str]) -> FstabPlan:
    """fstab by UUID: genfstab's when it names UUIDs, else built from blkid (no udev here)."""
    uuids = read_uuids(runner, devices)
    content = fstab_text(uuids, fs, mount_options)
    g = runner.probe(["genfstab", "-U", str(root)], check=False, quiet=True)
    lines = parse_genfstab(g.stdout) if g.rc == 0 else {}
    src = lines.get("/", ("",))[0]
    if src.startswith("UUID=") and src == f"UUID={uuids['root'].get('UUID')}":
        return FstabPlan(content, "genfstab -U (UUIDs confirmed by blkid)")
    why = f"genfstab wrote {src!r} for /" if src else "genfstab gave no line for /"
    return FstabPlan(content, f"blkid -p ({why}: no udev database)")


def root_settings(system, fstab: FstabPlan) -> list[Setting]:
    """The settings of a target root, in the order they are applied."""
    s: list[Setting] = [
        Fstab(fstab.content, note=fstab.source),
        Hostname(system.hostname),
        Hosts(system.hostname),
        EmptyMachineId(),
        DefaultTarget(system.default_target),
        MaskedUnits(system.mask_units),
        Journald(system.journald),
        ZramGenerator(system.zram_size, system.zram_algorithm),
        ThpMode(system.thp),
        Sysctl(system.sysctl),
    ]
    if system.autologin_tty:
        s.insert(4, SerialAutologin(system.autologin_tty))
    return s


def configure(runner: Runner, root: Path, system, fstab: FstabPlan) -> list[SettingResult]:
    """Apply every root setting and read each back from the target root."""
    return apply_settings(runner, root_settings(system, fstab), root=root)


def install_guest_check(runner: Runner, root: Path, extra: dict[str, str] | None = None) -> None:
    """Install the self-check (script + oneshot unit, enabled) and extra checks into the root.

    ``extra`` maps a name to a shell script that prints ``AIOS-CHECK key=value`` lines; later
    phases use it (e.g. the hardening phase checks the service and the overlay root).
    """
    runner.write_file(root / GUEST_CHECK_PATH.lstrip("/"), GUEST_CHECK.read_text(), mode=0o755,
                      note="guest self-check script")
    runner.write_file(root / "etc/systemd/system/aios-guest-check.service", GUEST_CHECK_UNIT,
                      note="guest self-check unit")
    runner.change(["systemctl", f"--root={root}", "enable", "aios-guest-check.service"])
    for name, script in (extra or {}).items():
        runner.write_file(root / GUEST_CHECK_DIR.lstrip("/") / f"{name}.sh", script, mode=0o755,
                          note=f"extra guest check {name}")
