"""The tiny kernel (tinyconfig + minimum + the blueprint's table, Debian's 6.12) built and booted
under QEMU (TCG) with a busybox initramfs; its /proc/config.gz must agree with the resulting
table. The build takes ~6 minutes on 2 cores the first time and is cached by the final .config.
"""
from pathlib import Path

import pytest

from aios_lib.kernel import boot_check, build as kernel_build, config as kernel_config, source as kernel_source, tiny_boot as kernel_boot
from aios_lib.kernel.kconfig import config_value
from aios_lib.params import load_params

FIX = Path(__file__).parent / "fixtures" / "kernel"


def test_parse_captured_boot_output():
    out = (FIX / "boot-6.12-tiny.txt").read_text()
    b = kernel_boot.parse_boot_output(out)
    assert b["done"] and b["uname"].startswith("6.12")
    assert "nohz_full=1" in b["cmdline"] and b["thp_mode"] == "always"
    assert b["config"]["HZ"] == "300" and b["config"]["IKCONFIG_PROC"] == "y"
    assert b["nohz_full"] == "1"


def test_qemu_argv_is_tcg_with_the_initramfs():
    argv = kernel_boot.qemu_argv("bz", "x.cpio", ["console=ttyS0", "nohz_full=1", "panic=-1"])
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert argv[argv.index("-append") + 1] == "console=ttyS0 nohz_full=1 panic=-1"
    assert "-no-reboot" in argv and argv[argv.index("-initrd") + 1] == "x.cpio"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_tiny_kernel_builds_boots_and_agrees(tmp_path):
    from aios_lib.context import open_run

    run = open_run(load_params("parameters/kernel-tiny.yaml"), run_dir=tmp_path / "run", plan=False, phase="03")
    src = kernel_source.source_tree(run)
    cfg = kernel_config.configure(run, src)
    built = kernel_build.build(run, cfg)
    assert built.image.exists() and built.image.stat().st_size > 500_000
    assert built.release.startswith("6.12") and built.release.endswith("-synapse")
    booted = kernel_boot.boot(run, built.image)
    assert booted.ok, booted.tail
    assert booted.seconds < 120
    assert booted.uname == built.release
    assert "nohz_full=1" in booted.cmdline and booted.nohz_full == "1"
    assert booted.thp_mode == "always"  # TRANSPARENT_HUGEPAGE=y, default ALWAYS, 1 GiB RAM
    # the booted kernel's own config agrees with the resulting table, row by row
    cmp = kernel_boot.compare(cfg.rows, cfg.table, cfg.final_config, booted.config)
    assert len(cmp) >= len(cfg.rows) and cmp["agree"].all(), cmp.to_string()
    assert config_value(booted.config, "HZ") == "300" and config_value(booted.config, "HZ_300") == "y"
    assert config_value(booted.config, "CPU_MITIGATIONS") == "n"
    assert config_value(booted.config, "SCHED_EEVDF") == "n"  # no such symbol: nothing in the config
    # the whole config agrees, not only the table's rows
    assert {k: v for k, v in booted.config.items()} == cfg.final_config
    assert "NO_HZ: Full dynticks CPUs: 1." in booted.dmesg
    rec = boot_check.record(run, cfg, built, booted)
    assert rec["config"]["stuck"] == 7 and rec["boot"]["table_agrees"] is True
    assert run.recorded("03", "kernel")["boot"]["uname"] == built.release
    # the runtime caveat: below 512 MiB of RAM the same kernel starts with THP off
    run.params.kernel.boot.memory = "256M"
    small = kernel_boot.boot(run, built.image)
    assert small.ok and small.thp_mode == "never" and small.config == booted.config
