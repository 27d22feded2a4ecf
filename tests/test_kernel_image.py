"""Phase 3 for real inside phase 2's image: configure, build, install, boot through systemd-boot.

The slow test builds a 6.12 kernel from Debian's config, cut down with localmodconfig to the
modules the image loads in QEMU (parameters/qemu-guest.lsmod.txt, captured by phase 02's guest
check), installs it into a copy of the verified base image and boots it there. First run: about
10-20 min of kernel build on 2 cores; cached in ~/.cache/synapse/kernel-build afterwards.
"""
import subprocess
from pathlib import Path

import pytest

from aios_lib.system import image
from aios_lib.kernel import boot_check, build as kernel_build, config as kernel_config, install as kernel_install, source as kernel_source
from aios_lib.context import open_run
from aios_lib.facts.blockdev import parse_losetup_j
from aios_lib.system import bootloader
from aios_lib.kernel.kconfig import config_value
from aios_lib.params import load_params, parse_params

ROOT = Path(__file__).resolve().parent.parent


def _params(tmp_path):
    data = load_params(ROOT / "parameters/kernel-image.yaml").model_dump(mode="json", exclude={"source_file"})
    img = tmp_path / "synapse-kernel.img"
    data["target"].update(image=str(img), confirm=str(img))
    return parse_params(data, "<kernel-image in tmp>"), img


def test_entry_options_append_only_new_names():
    entry = "title x\nversion 6.12.1-synapse\noptions root=PARTUUID=ab rw transparent_hugepage=madvise\n"
    out = bootloader.entry_with_options(entry, ["nohz_full=1", "transparent_hugepage=always"])
    assert "options root=PARTUUID=ab rw transparent_hugepage=madvise nohz_full=1\n" in out
    assert bootloader.entry_with_options(entry, []) == entry


def test_initrd_drivers_are_read_from_dracut_config_and_module_lists():
    from aios_lib.system.bootstrap import DRACUT_CONF

    want = kernel_install.dracut_drivers([DRACUT_CONF, 'force_drivers+=" zram "\n'])
    assert want[:3] == ["overlay", "xfs", "ext4"] and want[-1] == "zram"
    have = kernel_install.module_names("kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko.xz\n"
                               "kernel/drivers/block/virtio_blk.ko: \n", "kernel/fs/ext4/ext4.ko\n")
    assert have == {"xfs", "virtio_blk", "ext4"}  # each module has its own line in a real modules.dep


def test_keep_modules_extend_the_captured_list(make_run, tmp_path):
    lsmod = tmp_path / "lsmod.txt"
    lsmod.write_text("Module                  Size  Used by\nxfs 1 0\n")
    run = make_run({"schema_version": 1, "kernel": {"enabled": True, "base_config": "distro", "localmodconfig": True,
                                                    "lsmod_file": str(lsmod), "keep_modules": ["overlay"]}},
                   plan=True)
    cfg = kernel_config.configure(run, kernel_source.KernelSource("debian-package", "6.12", "x", tmp_path / "nowhere"))
    assert any(r.cmdline.startswith("write ") and "synapse-lsmod.txt" in r.cmdline for r in run.runner.history)
    assert any("LSMOD=" in c and "synapse-lsmod.txt" in c for c in cfg.commands)


def test_booted_config_from_a_guest_report():
    rep = {"kernel": "6.12.1-synapse", "kconfig.HZ_300": "y", "kconfig.NUMA": "n", "kconfig.HZ": "300"}
    assert boot_check.booted_config(rep) == {"HZ_300": "y", "HZ": "300"}


def test_loader_default_replaces_the_pattern():
    conf = "# Synapse: no menu\ndefault synapse-*\ntimeout 0\neditor no\n"
    out = bootloader.loader_default(conf, "synapse-6.12.1-synapse.conf")
    assert out.count("default ") == 1 and "default synapse-6.12.1-synapse.conf\n" in out
    assert out.startswith("# Synapse") and "timeout 0" in out


def test_install_cmdline_is_validated_when_the_parameters_load(make_run, tmp_path):
    """kernel.install.cmdline is checked like system.kernel_cmdline, before any phase has a run."""
    from aios_lib.params import ParamsError

    with pytest.raises(ParamsError) as e:
        make_run({"kernel": {"enabled": True, "install": {"cmdline": ["auditing=0"]}}}, plan=True)
    assert e.value.problems == ["<test>: key `kernel.install.cmdline`: `auditing=0` is not a kernel parameter; "
                                "use audit=0 (got list)"]
    with pytest.raises(ParamsError) as e:
        make_run({"kernel": {"install": {"cmdline": ["nohz_full=1", "mitigations=off"]}}}, plan=True)
    assert e.value.problems == ["<test>: key `kernel.install.cmdline`: `mitigations=off` needs "
                                "machine.trusted_offline: true (it disables CPU vulnerability mitigations); "
                                "set it or remove mitigations=off"]
    assert not (tmp_path / "run").exists()


def test_install_switched_off_is_shown_in_the_run_journal_as_planned(make_run, tmp_path):
    """A real run with kernel.install.enabled: false lists the install commands as planned in its
    own commands.jsonl (they used to go to a throwaway runner and were lost)."""
    from aios_lib.core.journal import read_journal

    run = make_run({"schema_version": 1, "kernel": {"enabled": True, "install": {"enabled": False}}}, plan=False)
    src = kernel_source.KernelSource("debian-package", "6.12", "x", tmp_path / "src")
    cfg = kernel_config.ConfigResult(src, "tinyconfig", tmp_path / "build", "", [], planned=True)
    built = kernel_build.BuildResult("k", tmp_path / "build", "all", tmp_path / "build/bzImage", False, planned=True)
    inst = kernel_install.install(run, cfg, built)
    assert inst.planned and not run.plan and not (tmp_path / "mnt").exists()
    entries = read_journal(tmp_path / "run" / "commands.jsonl")
    assert [e["cmdline"] for e in entries] == inst.commands
    assert any("kernel-install add" in c for c in inst.commands)
    assert all(e["planned"] and e["rc"] is None for e in entries)
    assert all("kernel.install.enabled is false: shown, not run" in e["note"] for e in entries)


def test_plan_shows_install_and_boot_in_the_image(tmp_path):
    """`aios plan 02 03 --params parameters/kernel-image.yaml`: every step, nothing run."""
    params, img = _params(tmp_path)
    run = open_run(params, run_dir=tmp_path / "plan", plan=True, phase="03")
    cfg = kernel_config.configure(run, kernel_source.source_tree(run))
    built = kernel_build.build(run, cfg)
    inst = kernel_install.install_into_target(run, cfg, built)
    planned = "\n".join(r.cmdline for r in run.runner.history if r.planned)
    assert inst.planned and "localmodconfig" in planned and "LSMOD=" in planned and "synapse-lsmod.txt" in planned
    assert "modules_install" in planned and "kernel-install add" in planned
    assert planned.index("dracut --force --kver") < planned.index("kernel-install add")
    assert "nohz_full=1" in inst.entry and inst.entry_name.startswith("synapse-")
    assert f"losetup -f --show -P {img}" in planned  # into phase 02's image, mounted as phase 02 does
    boot = boot_check.boot_in_target(run, cfg, built, inst)
    assert boot.planned and boot.argv[0] == "qemu-system-x86_64"
    assert not img.exists() and not any(r.rc is not None and r.kind != "probe" for r in run.runner.history)


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_custom_kernel_installed_in_the_image_boots_and_reads_back(tmp_path):
    params, img = _params(tmp_path)
    # phase 02: the verified base image (copied from the cache when an identical one was built)
    run2 = open_run(params, run_dir=tmp_path / "run", phase="02")
    image.build(run2, verify=False)
    assert img.exists()

    run = open_run(params, run_dir=tmp_path / "run", phase="03")
    cfg = kernel_config.configure(run, kernel_source.source_tree(run))
    # the blueprint's table as written: every row sticks (HZ 300 as HZ_300, SPECULATION_MITIGATIONS
    # as CPU_MITIGATIONS) but SCHED_EEVDF, which is no symbol, and the row says why
    by = {r.requested: r for r in cfg.rows}
    assert [r.requested for r in cfg.rows if not r.stuck] == ["SCHED_EEVDF"], cfg.table_df().to_string()
    assert by["SCHED_EEVDF"].status == "no such symbol" and "EEVDF" in by["SCHED_EEVDF"].reason + by["SCHED_EEVDF"].notes
    assert by["HZ"].applied_as.startswith("HZ_300") and by["SPECULATION_MITIGATIONS"].applied_as.startswith("CPU_MITIGATIONS")
    assert 30 <= cfg.modules_kept <= 150, cfg.modules_kept  # the image's own module list, not every module
    for sym in ("OVERLAY_FS", "EXT4_FS", "BLK_DEV_NVME"):  # kernel.keep_modules: what phase 02's initrd adds
        assert config_value(cfg.final_config, sym) in ("y", "m"), sym
    for sym in ("XFS_FS", "ZRAM", "VIRTIO_BLK", "VFAT_FS"):  # what the image needs to boot and to pass phase 02
        assert config_value(cfg.final_config, sym) in ("y", "m"), sym
    built = kernel_build.build(run, cfg)
    assert built.release.startswith("6.12.") and built.release.endswith("-synapse") and built.image.exists()

    inst = kernel_install.install_into_target(run, cfg, built)
    assert not inst.planned and inst.ok, inst.checks
    rows = {c["item"]: c for c in inst.checks}
    assert rows["loader.conf default"]["in effect"] == f"synapse-{built.release}.conf"
    assert "nohz_full=1" in rows["entry options"]["in effect"]
    assert rows["initrd drivers (dracut add_drivers)"]["in effect"] == "all present"
    assert parse_losetup_j(subprocess.run(["losetup", "-j", str(img)], capture_output=True, text=True).stdout) == []

    # boot it (snapshot): phase 02's rows still hold under the new kernel, and the kernel is ours
    boot = boot_check.boot_in_target(run, cfg, built, inst)
    assert not boot.planned and boot.rc == 0 and boot.ok, boot.table().to_string()
    got = {r["check"]: r["in effect"] for r in boot.rows}
    assert got["kernel"] == built.release and got["loader_entry"] == inst.entry_name
    assert got["kconfig_sha"] == cfg.config_hash  # /proc/config.gz is the .config that was built
    assert got["kconfig.HZ"] == "300" and got["kconfig.NUMA"] == "n" and got["kconfig.NO_HZ_FULL"] == "y"
    assert "nohz_full=1" in got["kernel command line"].split()
    assert got["THP mode"] == "madvise" and got["failed units"] == "none"
    from aios_lib.kernel import tiny_boot as kernel_boot

    side = kernel_boot.compare(cfg.rows, cfg.table, cfg.final_config, boot_check.booted_config(boot.report))
    assert len(side) >= len(cfg.rows) and side["agree"].all(), side.to_string()
    rec = boot_check.record(run, cfg, built, None, inst, boot)
    assert rec["install"]["release"] == built.release and rec["boot_in_target"]["ok"] is True
