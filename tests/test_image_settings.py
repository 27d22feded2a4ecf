"""The root settings of phase 2, applied to a directory tree and read back from it."""
import os
from pathlib import Path

from aios_lib.settings import apply_settings, settings_table
from aios_lib.settings._conf import parse_kv
from aios_lib.settings.journald import Journald
from aios_lib.settings.rootfiles import EmptyMachineId, Hostname
from aios_lib.settings.sysctl import Sysctl
from aios_lib.facts.kernel import bracketed
from aios_lib.settings.thp import ThpMode, parse_tmpfiles_mode
from aios_lib.settings.units import DefaultTarget, MaskedUnits, SerialAutologin
from aios_lib.settings.zram import ZramGenerator
from aios_lib.params import parse_params
from aios_lib.system.sysconfig import fstab_text, parse_genfstab, root_settings, FstabPlan


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ["etc/systemd/system", "usr/lib/systemd/system"]:
        (root / d).mkdir(parents=True)
    for unit in ["apt-daily.timer", "e2scrub_reap.service", "multi-user.target", "graphical.target"]:
        (root / "usr/lib/systemd/system" / unit).write_text("[Unit]\nDescription=x\n")
    os.symlink("/usr/lib/systemd/system/graphical.target", root / "etc/systemd/system/default.target")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return root


def test_settings_apply_and_read_back_from_a_root(runner, tmp_path):
    root = make_root(tmp_path)
    settings = [
        Hostname("synapse"), EmptyMachineId(), DefaultTarget("multi-user.target"),
        MaskedUnits(["apt-daily.timer", "e2scrub_reap.service", "bluetooth.service", "cups.service"]),
        Journald({"Storage": "volatile", "SystemMaxUse": "50M", "RuntimeMaxUse": "50M"}),
        ZramGenerator("ram", "zstd"), ThpMode("madvise"), Sysctl({"vm.swappiness": 180, "vm.page-cluster": 0}),
        SerialAutologin("ttyS0"),
    ]
    rows = apply_settings(runner, settings, root=root)
    table = settings_table(rows)
    # the masked units show one row each: the two that exist masked, the two absent ones as such
    units = table[table["setting"].str.startswith("mask ")].set_index("setting")["status"].to_dict()
    assert units == {"mask apt-daily.timer": "ok", "mask e2scrub_reap.service": "ok",
                     "mask bluetooth.service": "not installed", "mask cups.service": "not installed"}, table.to_string()
    assert set(table["status"]) == {"ok", "not installed"}, table.to_string()
    by = {r.name: r for r in rows}
    assert by["default target"].before == "graphical.target" and by["default target"].in_effect == "multi-user.target"
    assert os.readlink(root / "etc/systemd/system/apt-daily.timer") == "/dev/null"
    masked = by["masked units"]
    assert masked.in_effect == ["apt-daily.timer", "e2scrub_reap.service"]
    assert "bluetooth.service" in masked.note and "cups.service" in masked.note  # absent: listed, not created
    assert not os.path.lexists(root / "etc/systemd/system/bluetooth.service")
    assert (root / "etc/machine-id").read_text() == ""
    assert parse_kv((root / "etc/systemd/zram-generator.conf").read_text(), "zram0") == {
        "zram-size": "ram", "compression-algorithm": "zstd", "swap-priority": "100"}
    assert "zram-fraction" not in (root / "etc/systemd/zram-generator.conf").read_text()
    assert parse_kv((root / "etc/systemd/journald.conf.d/90-synapse.conf").read_text(), "Journal")["Storage"] == "volatile"
    assert by["sysctl (/etc/sysctl.d/90-synapse.conf)"].in_effect == {"vm.swappiness": "180", "vm.page-cluster": "0"}
    assert "--autologin root" in (root / "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf").read_text()
    # a second pass finds everything in place and changes nothing
    again = apply_settings(runner, settings, root=root)
    assert not any(r.applied for r in again)


def test_thp_parsers():
    assert bracketed("always [madvise] never\n") == "madvise"  # the live mode: facts.kernel's parse
    assert parse_tmpfiles_mode("w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise\n") == "madvise"
    assert parse_tmpfiles_mode("# nothing\n") is None


def test_fstab_by_uuid_with_genfstab_fallback_parse():
    uuids = {"root": {"UUID": "11111111-2222-3333-4444-555555555555"}, "esp": {"UUID": "ABCD-1234"}}
    system = parse_params({"schema_version": 1, "system": {"mount_options": ["noatime", "nodiratime"]}}).system
    text = fstab_text(uuids, "xfs", system.mount_options)  # normalised when the parameters loaded
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert lines[0].split() == ["UUID=11111111-2222-3333-4444-555555555555", "/", "xfs", "noatime", "0", "0"]
    assert lines[1].split()[:3] == ["UUID=ABCD-1234", "/efi", "vfat"] and "fmask=0077" in lines[1]
    # what genfstab -U prints without a udev database: a device path, not a UUID
    g = parse_genfstab("# /dev/loop0p2\n/dev/loop0p2\t/\txfs\trw,noatime\t0 1\n\nsynapse-esp /efi tmpfs rw 0 0\n")
    assert g["/"][0] == "/dev/loop0p2" and g["/efi"][1] == "tmpfs"


def test_root_settings_follow_the_parameters():
    from aios_lib.params import parse_params

    p = parse_params({"schema_version": 1, "system": {"autologin_tty": None, "thp": "never"}})
    names = [s.name for s in root_settings(p.system, FstabPlan("x", "test"))]
    assert "fstab" in names and "masked units" in names and not any(n.startswith("autologin") for n in names)
    assert next(s for s in root_settings(p.system, FstabPlan("x", "t")) if s.name == "transparent hugepages").desired == "never"
