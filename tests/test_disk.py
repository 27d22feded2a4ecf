"""Disk handling on real loop devices (small sparse images; fast) and the pure parsers."""
import json
import subprocess
from pathlib import Path

import pytest

from aios_lib.system.disk import (DiskRefused, Layout, MountStack, check_disk, partition_path, read_uuids,
                                  Devices, vfat_available)
from aios_lib.facts.blockdev import (disk_of, parse_blkid_export, parse_findmnt_targets, parse_losetup_j,
                                     parse_lsblk_in_use)
from aios_lib.core.journal import read_journal


def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout


def test_partition_names():
    assert partition_path("/dev/loop3", 1) == "/dev/loop3p1"
    assert partition_path("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert partition_path("/dev/sda", 1) == "/dev/sda1"
    assert partition_path("/dev/disk/by-id/nvme-X", 2) == "/dev/disk/by-id/nvme-X-part2"


def test_layout_commands():
    lay = Layout(esp_mib=512, root_fs="xfs")
    argv = lay.parted_argv("/img")
    assert argv[:6] == ["parted", "-s", "-a", "optimal", "/img", "--"]
    assert "513MiB" in argv and argv[-3:] == ["xfs", "513MiB", "100%"]
    assert lay.mkfs_root_argv("/dev/x")[0] == "mkfs.xfs"
    assert Layout(root_fs="ext4").mkfs_root_argv("/dev/x")[0] == "mkfs.ext4"
    # a sized root leaves free space behind it for a later partition (phase 6's /var/ai-data)
    assert Layout(esp_mib=512, root_mib=3072).parted_argv("/img")[-2:] == ["513MiB", "3585MiB"]


def test_parsers_on_captured_output(fixtures):
    d = fixtures / "image"
    reasons = parse_lsblk_in_use((d / "lsblk-root-disk.json").read_text(), (d / "proc-swaps.txt").read_text())
    assert reasons == ["/dev/vda is mounted on /"]
    assert disk_of((d / "lsblk-inverse-vda.txt").read_text()) == "vda"
    nested = json.dumps({"blockdevices": [{"name": "loop0", "path": "/dev/loop0", "mountpoints": [None], "children": [
        {"name": "loop0p2", "path": "/dev/loop0p2", "mountpoints": ["/mnt/x"]}]}]})
    assert parse_lsblk_in_use(nested) == ["/dev/loop0p2 is mounted on /mnt/x"]
    assert parse_lsblk_in_use(nested, "Filename Type Size Used Priority\n/dev/loop0p2 partition 1 0 -2\n")[-1] == \
        "/dev/loop0p2 is an active swap device"
    assert parse_losetup_j("/dev/loop1: []: (/tmp/a.img)\n/dev/loop4: []: (/tmp/a.img)\n") == ["/dev/loop1", "/dev/loop4"]
    assert parse_findmnt_targets("/\n/run/s/t\n/run/s/t/efi\n/run/s/tx\n", "/run/s/t") == ["/run/s/t/efi", "/run/s/t"]
    assert parse_blkid_export("DEVNAME=/dev/loop0p2\nUUID=ab-cd\nTYPE=xfs\n")["UUID"] == "ab-cd"


def test_running_system_disk_is_refused(runner, small_image, tmp_path):
    """The disk that holds / is refused. Where / is not on a block device (a container's
    overlay), no disk holds the running system: then a mounted loop device stands in, and
    check_disk must still refuse it as in use, naming no running-system reason."""
    root = sh("findmnt", "-n", "-o", "SOURCE", "/").strip()
    if root.startswith("/dev/"):
        disk = "/dev/" + disk_of(sh("lsblk", "-s", "-n", "-o", "NAME,TYPE", root))
        with pytest.raises(DiskRefused) as e:
            check_disk(runner, disk)
        assert "in use" in str(e.value) and "running system" in str(e.value)
        return
    with MountStack(runner) as ms:
        loop = ms.attach(small_image)
        subprocess.run(["mkfs.xfs", "-q", "-f", partition_path(loop, 2)], check=True)
        ms.mount(partition_path(loop, 2), tmp_path / "mnt")
        with pytest.raises(DiskRefused) as e:
            check_disk(runner, loop)
        assert "in use" in str(e.value) and "running system" not in str(e.value)


def test_absent_disk_is_noted_not_refused(runner):
    info = check_disk(runner, "/dev/disk/by-id/nvme-does-not-exist")
    assert info["present"] is False and "not present" in info["note"]


@pytest.fixture
def small_image(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    subprocess.run(["truncate", "-s", "512M", str(img)], check=True)
    subprocess.run(Layout(esp_mib=100).parted_argv(str(img)), check=True, capture_output=True)
    return img


def _attached(img):
    return parse_losetup_j(sh("losetup", "-j", str(img)))


def test_attach_format_mount_and_release(runner, small_image, tmp_path):
    mnt = tmp_path / "mnt"
    with MountStack(runner) as ms:
        loop = ms.attach(small_image)
        # the partition nodes exist, from losetup -P or from partx -a on kernels that make none
        assert Path(partition_path(loop, 1)).exists() and Path(partition_path(loop, 2)).exists()
        subprocess.run(["mkfs.xfs", "-q", "-f", partition_path(loop, 2)], check=True)
        subprocess.run(["mkfs.fat", "-F", "32", partition_path(loop, 1)], check=True, capture_output=True)
        ms.mount(partition_path(loop, 2), mnt, options="noatime")
        assert str(mnt) in sh("findmnt", "-rn", "-o", "TARGET")
        uuids = read_uuids(runner, Devices(loop, partition_path(loop, 1), partition_path(loop, 2), str(small_image), loop))
        assert uuids["root"]["TYPE"] == "xfs" and len(uuids["root"]["UUID"]) == 36
        assert uuids["esp"]["TYPE"] == "vfat" and uuids["root"]["PARTUUID"]
        # the lsblk-based check refuses this loop device while its partition is mounted
        with pytest.raises(DiskRefused, match="mounted on"):
            check_disk(runner, loop)
    assert str(mnt) not in sh("findmnt", "-rn", "-o", "TARGET")
    assert _attached(small_image) == []
    cmds = [e["cmdline"] for e in read_journal(tmp_path / "commands.jsonl")]
    assert any(c.startswith("losetup -f --show -P") for c in cmds) and any(c.startswith("losetup -d") for c in cmds)


def test_exception_inside_releases_everything(runner, small_image, tmp_path):
    mnt = tmp_path / "mnt2"
    with pytest.raises(KeyboardInterrupt):
        with MountStack(runner) as ms:
            loop = ms.attach(small_image)
            subprocess.run(["mkfs.ext4", "-q", "-F", partition_path(loop, 2)], check=True)
            ms.mount(partition_path(loop, 2), mnt)
            raise KeyboardInterrupt  # Ctrl-C in the middle of a step
    assert str(mnt) not in sh("findmnt", "-rn", "-o", "TARGET")
    assert _attached(small_image) == []


def test_no_vfat_driver_is_detected_consistently(runner):
    has = "vfat" in Path("/proc/filesystems").read_text() or subprocess.run(
        ["modprobe", "-n", "-q", "vfat"]).returncode == 0
    assert vfat_available(runner) == has


def test_disk_target_runs_the_same_steps_on_a_confirmed_block_device(tmp_path):
    """target.kind: disk on a real block device (a loop device named through /dev/disk/by-id)."""
    import os
    import uuid

    from aios_lib.system import image, target
    from aios_lib.context import open_run
    from aios_lib.params import parse_params

    backing = tmp_path / "backing.img"
    subprocess.run(["truncate", "-s", "1G", str(backing)], check=True)
    loop = sh("losetup", "-f", "--show", str(backing)).strip()
    link = Path(f"/dev/disk/by-id/synapse-test-{uuid.uuid4().hex[:8]}")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(loop, link)
    try:
        params = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": str(link), "confirm": str(link)},
                               "system": {"esp_size_mib": 100}}, "<disk test>")
        run = open_run(params, run_dir=tmp_path / "run", phase="02")
        b = image.start(run)
        image.validate(run, b)
        assert "not in use" in image.prepare(run, b).detail
        image.partition(run, b)
        image.format(run, b)
        image.mount(run, b)
        root = b.spec.root
        assert (root / "efi").is_dir() and str(root) in sh("findmnt", "-rn", "-o", "TARGET")
        uuids = read_uuids(run.runner, b.att.devices)
        assert uuids["root"]["TYPE"] == "xfs" and uuids["esp"]["TYPE"] == "vfat"
        # the disk is now in use: a second run refuses to touch it
        run2 = open_run(params, run_dir=tmp_path / "run2", phase="02")
        image.validate(run2, image.start(run2))
        with pytest.raises(DiskRefused, match="mounted on"):
            check_disk(run2.runner, str(link))
        released = target.release(b.att)
        assert any("unmounted" in r for r in released)
        assert str(root) not in sh("findmnt", "-rn", "-o", "TARGET")
    finally:
        link.unlink(missing_ok=True)
        subprocess.run(["partx", "-d", loop], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
