"""Read-only root: the data partition on a real image file, the volatile boot entry on a real FAT."""
import subprocess

import pytest

from aios_lib.facts.blockdev import parse_sfdisk_json
from aios_lib.facts.boot import parse_bls, parse_loader_default
from aios_lib.service import readonly
from aios_lib.system.bootloader import loader_default

ENTRY = """title      Debian GNU/Linux 12 (bookworm)
version    6.1.0-50-amd64
machine-id aios
sort-key   debian
options    root=PARTUUID=1234 rw console=ttyS0 nowatchdog nmi_watchdog=0 audit=0
linux      /aios/6.1.0-50-amd64/linux
initrd     /aios/6.1.0-50-amd64/initrd
"""


def test_volatile_entry_text():
    text = readonly.volatile_entry_text(ENTRY)
    opts = dict(parse_bls(text))["options"].split()
    assert "ro" in opts and "rw" not in opts and opts[-1] == "systemd.volatile=overlay"
    assert dict(parse_bls(text))["linux"] == "/aios/6.1.0-50-amd64/linux"
    assert readonly.volatile_entry_text(text).count("systemd.volatile=overlay") == 1
    assert parse_loader_default(loader_default("default a.conf\ntimeout 0\n", "b.conf", first=True)) == "b.conf"


def _sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def test_volatile_entry_on_a_real_fat(make_run, tmp_path):
    esp = tmp_path / "esp.img"
    _sh("truncate", "-s", "64M", str(esp))
    _sh("mkfs.fat", "-F", "32", str(esp))
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    _sh("mmd", "-i", str(esp), "::/loader", "::/loader/entries", env=env)
    (tmp_path / "loader.conf").write_text("default aios-6.1.0-50-amd64.conf\ntimeout 0\neditor no\n")
    (tmp_path / "e.conf").write_text(ENTRY)
    _sh("mcopy", "-i", str(esp), str(tmp_path / "loader.conf"), "::/loader/loader.conf", env=env)
    _sh("mcopy", "-i", str(esp), str(tmp_path / "e.conf"), "::/loader/entries/aios-6.1.0-50-amd64.conf", env=env)
    run = make_run({"target": {"kind": "image", "image": str(esp), "confirm": str(esp)}})
    entry = readonly.install_volatile_entry(run, str(esp))
    assert entry.source == "aios-6.1.0-50-amd64.conf" and entry.default == readonly.RO_ENTRY
    conf = _sh("mtype", "-i", str(esp), "::/loader/loader.conf", env=env).stdout
    assert parse_loader_default(conf) == readonly.RO_ENTRY and "editor no" in conf
    ro = _sh("mtype", "-i", str(esp), f"::/loader/entries/{readonly.RO_ENTRY}", env=env).stdout
    assert "systemd.volatile=overlay" in ro and " ro " in ro
    _sh("fsck.fat", "-n", str(esp))


def test_volatile_entry_needs_confirmation(make_run, tmp_path):
    from aios_lib.core.runner import DestructiveRefused

    esp = tmp_path / "esp.img"
    _sh("truncate", "-s", "64M", str(esp))
    _sh("mkfs.fat", "-F", "32", str(esp))
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    _sh("mmd", "-i", str(esp), "::/loader", "::/loader/entries", env=env)
    (tmp_path / "e.conf").write_text(ENTRY)
    _sh("mcopy", "-i", str(esp), str(tmp_path / "e.conf"), "::/loader/entries/x.conf", env=env)
    with pytest.raises(DestructiveRefused):
        readonly.install_volatile_entry(make_run(), str(esp))


def test_data_partition_appended_to_a_real_gpt_image(make_run, tmp_path):
    img = tmp_path / "disk.img"
    _sh("truncate", "-s", "96M", str(img))
    _sh("parted", "-s", str(img), "--", "mklabel", "gpt", "mkpart", "ESP", "fat32", "1MiB", "33MiB",
        "set", "1", "esp", "on", "mkpart", "root", "xfs", "33MiB", "100%")
    run = make_run({"target": {"kind": "image", "image": str(img), "confirm": str(img)},
                    "service": {"data_size": "64M"}})
    part = readonly.add_data_partition(run, img, str(img))
    assert part.added and part.number == 3
    assert img.stat().st_size == 160 * 2**20
    parts = parse_sfdisk_json(_sh("sfdisk", "-J", str(img)).stdout)
    assert [p.get("name") for p in parts] == ["ESP", "root", "ai-data"]
    assert parts[2]["type"] == readonly.LINUX_FS_GUID
    assert int(parts[2]["size"]) * 512 >= 63 * 2**20  # the new space, less GPT's backup area
    assert "No errors detected" in _sh("sfdisk", "--verify", str(img)).stdout
    again = readonly.add_data_partition(run, img, str(img))  # idempotent
    assert not again.added and again.number == 3 and img.stat().st_size == 160 * 2**20


def test_persistence_rows():
    b1 = {"begin": "x boot_id=aaa", "root_fstype": "overlay", "root_marker_written": "aaa",
          "data_marker_written": "aaa", "root_marker_before": "absent", "data_marker_before": "absent"}
    good = {"begin": "y boot_id=bbb", "root_marker_before": "absent", "data_marker_before": "aaa"}
    assert all(r["ok"] for r in readonly.persistence_rows(b1, good))
    leaked = dict(good, root_marker_before="aaa")
    assert not readonly.persistence_rows(b1, leaked)[3]["ok"]
    lost = dict(good, data_marker_before="absent")
    assert not readonly.persistence_rows(b1, lost)[4]["ok"]
