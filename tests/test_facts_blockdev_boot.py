"""Facts about block devices, the ESP and a target root, parsed from captured real output
(tests/fixtures/image/, see its README), and the status/root extensions of Fact."""
from __future__ import annotations

import re
from pathlib import Path

from aios_lib.facts import blockdev, boot, rootfs, virt
from aios_lib.facts.base import Fact, gather, gather_outputs
from aios_lib.system import bootloader

FIX = Path(__file__).resolve().parent / "fixtures" / "image"


def text(name: str) -> str:
    return (FIX / name).read_text(errors="replace")


# ---- block devices ---------------------------------------------------------------------------
def test_blkid_reads_the_superblocks_of_a_real_esp_and_root():
    esp = blockdev.blkid("/dev/loop0p1").parse({"export": text("blkid-p-esp.txt")})
    root = blockdev.blkid("/dev/loop0p2").parse({"export": text("blkid-p-root.txt")})
    assert (esp["TYPE"], esp["UUID"], esp["LABEL"]) == ("vfat", "A080-6BD1", "ESP")
    assert (root["TYPE"], root["UUID"]) == ("xfs", "c3c07583-94d2-4285-9228-ff9bd7a6dbd7")
    # blkid -p names the partition's UUID PART_ENTRY_UUID; PARTUUID is the name the kernel uses
    assert root["PARTUUID"] == root["PART_ENTRY_UUID"] == "6fb7f7eb-8301-451b-8d1b-b9c38a1d5ba1"
    assert blockdev.blkid("/dev/x").parse({"export": ""}) == {}  # no superblock: blkid exits 2, no output


def test_partitions_and_partuuid_of_a_gpt_image():
    parts = blockdev.partitions("disk.img").parse({"table": text("sfdisk-J.json")})
    assert [(p["name"], p["start"], p["size"]) for p in parts] == [("ESP", 2048, 131072), ("root", 133120, 684032)]
    # sfdisk and blkid (of the same image on a loop device) agree
    assert parts[1]["uuid"].lower() == blockdev.parse_blkid_export(text("blkid-p-root.txt"))["PARTUUID"]
    assert blockdev.partitions("none").parse({"table": ""}) == []
    uuid = blockdev.partuuid("synapse-kernel.img", 2).parse({"uuid": text("sfdisk-part-uuid.txt")})
    assert uuid == "52d6db4b-7e04-4a16-84bf-48293aed46bb"  # lower case, as root=PARTUUID= in /proc/cmdline


def test_disk_in_use_and_the_disk_holding_the_running_system():
    use = blockdev.disk_in_use("/dev/vda").parse({"lsblk": text("lsblk-root-disk.json"),
                                                  "swaps": text("proc-swaps.txt")})
    assert use["reasons"] == ["/dev/vda is mounted on /"]
    assert use["lsblk"]["blockdevices"][0]["path"] == "/dev/vda"
    assert blockdev.disk_holding("/dev/vda").parse({"tree": text("lsblk-inverse-vda.txt")}) == "vda"
    assert blockdev.ROOT_SOURCE.parse({"source": "/dev/vda\n"}) == "/dev/vda"


def test_loops_of_an_attached_image():
    assert blockdev.loops_of("disk.img").parse({"loops": text("losetup-j.txt")}) == ["/dev/loop0"]


def test_live_blockdev_facts_are_journaled_probes(runner):
    targets = gather(runner, blockdev.mount_targets("/"))
    assert "/" in targets and targets == sorted(targets, key=lambda t: t.count("/"), reverse=True)
    assert gather(runner, blockdev.loops_of("/nonexistent.img")) == []
    assert all(r.kind == "probe" and not r.planned for r in runner.history)


# ---- the ESP ---------------------------------------------------------------------------------
def test_loader_conf_written_by_synapse_reads_back():
    conf = text("mtype-loader-conf.txt")  # mtype of the loader.conf Synapse writes, on a real FAT
    assert conf == bootloader.loader_conf()
    assert boot.parse_loader_conf(conf) == {"default": "synapse-*", "timeout": "0", "editor": "no",
                                            "console-mode": "keep"}
    assert boot.parse_loader_default(conf) == "synapse-*"
    loader = boot.esp_loader("/dev/loop0p1").parse({"loader_conf": conf, "entries": text("mdir-entries.txt")})
    assert loader == {"loader_conf": conf, "default": "synapse-*", "entries": ["synapse-6.1.0-50-amd64.conf"]}


def test_loader_default_keeps_the_comment_on_top_or_goes_first():
    conf = text("mtype-loader-conf.txt")
    after = bootloader.loader_default(conf, "synapse-6.12.117-synapse.conf")
    assert after.splitlines()[:2] == [conf.splitlines()[0], "default synapse-6.12.117-synapse.conf"]
    first = bootloader.loader_default(conf, "synapse-ro.conf", first=True)
    assert first.splitlines()[0] == "default synapse-ro.conf" and first.count("default ") == 1
    for out in (after, first):
        assert boot.parse_loader_conf(out)["timeout"] == "0" and "editor no" in out


def test_esp_listing_and_entries_of_a_real_esp():
    files = boot.esp_listing("/dev/loop0p1").parse({"mdir": text("mdir-esp.txt")})
    assert "::/EFI/BOOT/BOOTX64.EFI" in files and "::/loader/entries/synapse-6.12.117-synapse.conf" in files
    kernels = sorted({m.group(1) for f in files if (m := re.match(r"::/synapse/([^/]+)/linux$", f))})
    assert kernels == ["6.1.0-50-amd64", "6.12.117-synapse"]
    # ls usr/lib/modules of that root lists the same names (one per line): newest last by version
    assert rootfs.parse_kernel_versions("\n".join(reversed(kernels)) + "\n") == ["6.1.0-50-amd64", "6.12.117-synapse"]


def test_fat_check_reads_the_exit_status():
    clean = boot.fat_check("/dev/loop0p1").parse({"fsck": text("fsck-fat-n-clean.txt"), "fsck.rc": 0,
                                                 "fsck.stderr": ""})
    dirty = boot.fat_check("fat.img").parse({"fsck": text("fsck-fat-n-dirty.txt"), "fsck.rc": 1, "fsck.stderr": ""})
    assert clean["ok"] and "5 files" in clean["report"]
    assert not dirty["ok"] and "FATs differ" in dirty["report"]


def test_vfat_support_from_proc_filesystems_and_modprobe():
    fs = text("proc-filesystems.txt")  # the development machine: no vfat, modprobe -n exits 1
    assert "xfs" in boot.parse_filesystems(fs) and "vfat" not in boot.parse_filesystems(fs)
    assert boot.VFAT.parse({"filesystems": fs, "modprobe": "", "modprobe.rc": 1}) is False
    assert boot.VFAT.parse({"filesystems": fs, "modprobe": "", "modprobe.rc": 0}) is True  # a loadable module
    assert boot.VFAT.parse({"filesystems": fs, "modprobe": "", "modprobe.rc": "0"}) is True  # the code as text


def test_esp_dir_reads_a_tree_as_kernel_install_leaves_it(runner, tmp_path):
    efi = tmp_path / "efi"
    entry = "synapse-6.1.0-50-amd64.conf"
    (efi / "loader/entries").mkdir(parents=True)
    (efi / "loader/loader.conf").write_text(text("mtype-loader-conf.txt"))
    (efi / "loader/entries" / entry).write_text("title x\noptions root=PARTUUID=ab rw\noptions audit=0\n")
    got = gather(runner, boot.esp_dir(efi, entry))
    assert got["entry"] == {"title": "x", "options": "root=PARTUUID=ab rw audit=0"}
    assert got["loader"]["timeout"] == "0"
    assert got["files"] == ["loader/entries/" + entry, "loader/loader.conf"]
    assert boot.root_ref_of((efi / "loader/entries" / entry).read_text()) == "PARTUUID=ab"


# ---- roots and QEMU --------------------------------------------------------------------------
def test_apt_mirror_from_a_real_deb822_source():
    fact = rootfs.apt_sources(["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"])
    assert fact.parse({"source0": "", "source1": text("debian.sources")}) == "http://deb.debian.org/debian"
    assert fact.parse({"source0": "", "source1": ""}) is None


def test_kvm_trial_that_dies_with_a_kvm_error_means_tcg():
    fact = virt.kvm_trial("qemu-system-x86_64", "/usr/share/OVMF/OVMF_CODE_4M.fd", 8)
    assert fact.timeouts == {"qemu": 8} and fact.status == {"qemu"}
    got = fact.parse({"qemu": "", "qemu.stderr": text("qemu-kvm-trial.stderr"), "qemu.timed_out": True,
                      "qemu.rc": 124})
    assert got == {"usable": False, "why": "KVM internal error. Suberror: 1"}
    # a firmware that is still quietly running when it is stopped: KVM works
    assert fact.parse({"qemu": "", "qemu.stderr": "", "qemu.timed_out": True, "qemu.rc": 124})["usable"] is True


# ---- Fact extensions -------------------------------------------------------------------------
def test_status_commands_keep_output_and_exit_code(runner):
    fact = Fact("t", {"s": ("sh", "-c", "echo out; echo err >&2; exit 3"), "t": ("sleep", "5")},
                parse=dict, status=frozenset({"s", "t"}), timeouts={"t": 0.5})
    out = gather_outputs(runner, fact)
    assert (out["s"], out["s.rc"], out["s.stderr"], out["s.timed_out"]) == ("out\n", 3, "err\n", False)
    assert out["t.timed_out"] is True and out["t.rc"] == 124
    assert [r.kind for r in runner.history] == ["probe", "probe"]


def test_a_fact_of_a_root_runs_its_commands_in_that_root(runner, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "probe", lambda argv, **kw: seen.append((argv, kw.get("root"))) or
                        type("R", (), {"rc": 0, "stdout": "x", "stderr": "", "timed_out": False})())
    got = gather(runner, rootfs.initrd_listing(tmp_path))
    assert seen == [(["sh", "-c", "lsinitrd /boot/initrd.img-* 2>/dev/null || true"], str(tmp_path))]
    assert got == {"listing": "x", "volatile_root": False}
