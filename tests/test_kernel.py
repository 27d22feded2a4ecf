"""The table applied to Debian's real kernel trees (config step only: seconds each, after the
one-time extraction into the cache), the localmodconfig refusal, and plan mode for a full build.

The tiny kernel build and boot are in test_kernel_boot.py.
"""
import shutil

import pytest

from aios_lib.kernel import build as kernel_build, config as kernel_config, install as kernel_install, source as kernel_source
from aios_lib.kernel.kconfig import config_value
from aios_lib.params import load_params
from aios_lib.core.paths import resolve_in_project


def _params(**kernel_over):
    k = {"enabled": True, "version": "6.12", "base_config": "tinyconfig"}
    k.update(kernel_over)
    return {"kernel": k}


def _by(cfg):
    return {r.requested: r for r in cfg.rows}


@pytest.fixture(scope="module")
def src612(tmp_path_factory):
    """Debian's linux-source-6.12, extracted once into the cache."""
    from aios_lib.context import open_run
    from aios_lib.params import parse_params

    run = open_run(parse_params({"schema_version": 1, **_params()}), run_dir=tmp_path_factory.mktemp("src"))
    src = kernel_source.source_tree(run)
    assert src.ready and src.release[:2] == (6, 12)
    return src


@pytest.mark.slow
def test_tinyconfig_plus_minimum_612(make_run, src612):
    run = make_run(_params())
    cfg = kernel_config.configure(run, src612)
    by = _by(cfg)
    # the kernel's own tools ran: merge_config.sh then olddefconfig with unknown-symbol warnings
    cmds = "\n".join(cfg.commands)
    assert "merge_config.sh' -m" in cmds and "olddefconfig" in cmds and "tinyconfig" in cmds
    assert "SCHED_EEVDF" in cfg.unknown
    assert by["SCHED_EEVDF"].status == "no such symbol" and "6.6" in by["SCHED_EEVDF"].notes
    assert by["HZ"].stuck and config_value(cfg.final_config, "HZ") == "300"
    assert config_value(cfg.final_config, "HZ_1000") == "n"
    assert by["PREEMPT_VOLUNTARY"].stuck
    assert by["NO_HZ_FULL"].stuck and "nohz_full=" in by["NO_HZ_FULL"].notes
    assert by["SPECULATION_MITIGATIONS"].status == "renamed (stuck)"
    assert config_value(cfg.final_config, "CPU_MITIGATIONS") == "n"
    assert by["NUMA"].stuck and by["TRANSPARENT_HUGEPAGE"].stuck
    assert by["CPU_FREQ_GOV_PERFORMANCE"].stuck and "default governor" in by["CPU_FREQ_GOV_PERFORMANCE"].notes
    assert sum(r.stuck for r in cfg.rows) == 7  # all but SCHED_EEVDF
    df = cfg.table_df()
    assert list(df["requested"]) == list(run.params.kernel.options)
    assert "requested" in cfg._repr_html_()


@pytest.mark.slow
def test_tinyconfig_without_minimum_shows_dependencies(make_run, src612):
    run = make_run(_params(minimum=["64BIT"]))
    by = _by(kernel_config.configure(run, src612, label="nominimum"))
    assert by["NO_HZ_FULL"].status == "dependency unmet"
    assert "SMP" in by["NO_HZ_FULL"].depends and "depends on" in by["NO_HZ_FULL"].depends
    assert by["CPU_FREQ_GOV_PERFORMANCE"].status == "dependency unmet"
    assert "CPU_FREQ" in by["CPU_FREQ_GOV_PERFORMANCE"].reason + by["CPU_FREQ_GOV_PERFORMANCE"].depends


@pytest.mark.slow
def test_defconfig_612(make_run, src612):
    run = make_run(_params(base_config="defconfig"))
    cfg = kernel_config.configure(run, src612)
    by = _by(cfg)
    assert cfg.base_config.get("HZ_1000") == "y"  # what defconfig starts from
    assert by["HZ"].stuck and by["HZ"].base == "HZ=1000"
    assert by["PREEMPT_VOLUNTARY"].stuck and "preempt=" in by["PREEMPT_VOLUNTARY"].notes  # PREEMPT_DYNAMIC
    assert by["SCHED_EEVDF"].status == "no such symbol"
    assert by["NUMA"].stuck and cfg.base_config.get("NUMA") == "y"
    assert by["SPECULATION_MITIGATIONS"].stuck


@pytest.mark.slow
def test_debian_config_612(make_run, src612):
    run = make_run(_params(base_config="distro"))
    cfg = kernel_config.configure(run, src612)
    by = _by(cfg)
    assert cfg.base_config.get("HZ_250") == "y" and cfg.base_config.get("CPU_MITIGATIONS") == "y"
    assert by["HZ"].stuck and by["HZ"].base == "HZ=250"
    assert sum(r.stuck for r in cfg.rows) == 7
    assert "schedutil" in by["CPU_FREQ_GOV_PERFORMANCE"].notes.lower() or \
        "default governor" in by["CPU_FREQ_GOV_PERFORMANCE"].notes


@pytest.mark.slow
def test_running_kernel_config(make_run, src612):
    """This machine's own /proc/config.gz (a newer kernel's) as the base of the 6.12 tree."""
    run = make_run(_params(base_config="running"))
    cfg = kernel_config.configure(run, src612)
    by = _by(cfg)
    assert any("zcat /proc/config.gz" in c for c in cfg.commands)
    assert len(cfg.base_config) > 1000
    assert by["HZ"].stuck and by["SCHED_EEVDF"].status == "no such symbol"
    assert sum(r.stuck for r in cfg.rows) == 7


@pytest.mark.slow
def test_literal_table_loses_rows(make_run, src612):
    """The blueprint's way (rows as written, no choice handling) on defconfig."""
    run = make_run(_params(base_config="defconfig"))
    cfg = kernel_config.configure(run, src612, resolve=False, label="literal")
    by = _by(cfg)
    assert not by["HZ"].stuck and by["HZ"].status == "no prompt"
    assert config_value(cfg.final_config, "HZ") == "1000"
    assert by["SPECULATION_MITIGATIONS"].status == "no such symbol"
    assert config_value(cfg.final_config, "CPU_MITIGATIONS") == "y"
    assert set(cfg.unknown) >= {"SCHED_EEVDF", "SPECULATION_MITIGATIONS"}


@pytest.mark.slow
def test_thp_made_impossible_by_preempt_rt(make_run, src612):
    run = make_run(_params(base_config="defconfig"))
    cfg = kernel_config.configure(run, src612, options={"EXPERT": "y", "PREEMPT_RT": "y", "TRANSPARENT_HUGEPAGE": "y"},
                           label="rt")
    by = _by(cfg)
    assert by["PREEMPT_RT"].stuck
    assert by["TRANSPARENT_HUGEPAGE"].status == "impossible"
    assert "PREEMPT_RT=y" in by["TRANSPARENT_HUGEPAGE"].reason and "!PREEMPT_RT" in by["TRANSPARENT_HUGEPAGE"].depends


@pytest.mark.slow
def test_debian_rt_config(make_run, src612):
    """Debian's rt flavour: the resolved table turns PREEMPT_RT off, so VOLUNTARY and THP stick."""
    run = make_run(_params(base_config="distro", distro_flavour="amd64_rt_amd64"))
    cfg = kernel_config.configure(run, src612, label="rt-resolved")
    by = _by(cfg)
    assert cfg.base_config.get("PREEMPT_RT") == "y" and cfg.base_config.get("TRANSPARENT_HUGEPAGE", "n") == "n"
    assert by["PREEMPT_VOLUNTARY"].stuck and by["TRANSPARENT_HUGEPAGE"].stuck
    assert config_value(cfg.final_config, "PREEMPT_RT") == "n"


@pytest.mark.slow
def test_two_members_of_one_choice(make_run, src612):
    run = make_run(_params(base_config="defconfig"))
    cfg = kernel_config.configure(run, src612, options={"PREEMPT_VOLUNTARY": "y", "PREEMPT": "y"}, label="twochoice")
    by = _by(cfg)
    assert by["PREEMPT"].stuck
    assert by["PREEMPT_VOLUNTARY"].status == "lost to another choice"
    assert "PREEMPT=y won" in by["PREEMPT_VOLUNTARY"].reason and "table also asks" in by["PREEMPT_VOLUNTARY"].reason


def test_localmodconfig_refuses_empty_list_before_running_anything(make_run, fixtures, tmp_path):
    # an empty list is refused when the parameters load; one emptied after that, here
    listed = tmp_path / "lsmod.txt"
    shutil.copyfile(fixtures / "kernel" / "lsmod-kvm-guest.txt", listed)
    run = make_run(_params(localmodconfig=True, lsmod_file=str(listed)))
    shutil.copyfile(fixtures / "kernel" / "lsmod-empty.txt", listed)
    with pytest.raises(kernel_source.KernelError, match="names no modules.*lsmod > lsmod.txt"):
        kernel_config.configure(run, kernel_source.KernelSource("debian-package", "6.12", "x", resolve_in_project("nowhere")))
    assert not any("localmodconfig" in r.cmdline for r in run.runner.history)


def test_plan_full_example_lists_the_commands(make_run):
    """A user with 8 cores changes parameters only: plan mode shows every step of the full build."""
    from aios_lib.context import open_run

    p = load_params("parameters/kernel-full-example.yaml")
    run = open_run(p, run_dir=make_run().dir / "plan", plan=True, phase="03")
    src = kernel_source.source_tree(run)
    cfg = kernel_config.configure(run, src)
    built = kernel_build.build(run, cfg)
    inst = kernel_install.install(run, cfg, built)
    planned = "\n".join(r.cmdline for r in run.runner.history if r.planned)
    assert "zcat /proc/config.gz" in "\n".join(cfg.commands)  # base: the running kernel's config
    assert "localmodconfig" in planned and "LSMOD=" in planned
    assert "merge_config.sh' -m" in planned and "olddefconfig" in planned
    assert "-j8" in built.command and " all" in built.command
    assert any("modules_install" in c for c in inst.commands)
    assert "loader/entries/synapse-" in "\n".join(inst.commands) and "nohz_full=1-7" in inst.entry
    assert cfg.warnings and "lsmod" in cfg.warnings[0]  # the list is captured on the target, not here
    assert not any(r.rc is not None and r.kind != "probe" for r in run.runner.history)


@pytest.mark.slow
def test_debian_61_tree_differs(make_run):
    """6.1: CFS (no EEVDF, no option for it either), CPU_MITIGATIONS present (backported rename)."""
    run = make_run(_params(version="6.1"))
    src = kernel_source.source_tree(run)
    assert src.ready and src.release[:2] == (6, 1)
    cfg = kernel_config.configure(run, src)
    by = _by(cfg)
    assert by["SCHED_EEVDF"].status == "no such symbol" and "CFS" in by["SCHED_EEVDF"].notes
    assert by["SPECULATION_MITIGATIONS"].status == "renamed (stuck)"
    assert "mitigations=auto" in by["SPECULATION_MITIGATIONS"].notes  # 6.1 lets the cmdline turn them back on
    assert by["HZ"].stuck and config_value(cfg.final_config, "HZ") == "300"
    assert by["NO_HZ_FULL"].stuck and by["PREEMPT_VOLUNTARY"].stuck


@pytest.mark.slow
def test_localmodconfig_with_a_module_list(make_run, src612, fixtures):
    run = make_run(_params(base_config="distro", localmodconfig=True,
                           lsmod_file=str(fixtures / "kernel" / "lsmod-kvm-guest.txt")))
    cfg = kernel_config.configure(run, src612)
    base_modules = sum(1 for v in cfg.base_config.values() if v == "m")
    assert base_modules > 3000  # Debian's config builds thousands of modules
    assert 5 <= cfg.modules_kept < 200, cfg.modules_kept
    assert config_value(cfg.final_config, "VIRTIO_NET") in ("y", "m")
    assert any("LSMOD=" in c and "localmodconfig" in c for c in cfg.commands)
    assert sum(r.stuck for r in cfg.rows) == 7  # the table is applied after, so nothing is stripped


def test_plan_git_and_linux_tkg_sources(make_run):
    """Without internet here, the git and linux-tkg sources are shown as plans."""
    run = make_run(_params(source="git", git_ref="v6.12.20", build_target="bindeb-pkg",
                           install={"enabled": True, "method": "bindeb-pkg"}), plan=True)
    src = kernel_source.source_tree(run)
    assert src.key == "git-v6.12.20" and not src.ready
    clone = [r.cmdline for r in run.runner.history if r.argv[:2] == ["git", "clone"]]
    assert clone and "--branch v6.12.20" in clone[0] and "stable/linux.git" in clone[0]
    cfg = kernel_config.configure(run, src)
    built = kernel_build.build(run, cfg)
    assert built.planned and built.command.endswith("bindeb-pkg")
    inst = kernel_install.install(run, cfg, built)
    assert any(c.startswith("arch-chroot") or c.startswith("chroot") for c in inst.commands)
    assert any("dpkg -i" in c for c in inst.commands)
    tkg = make_run(_params(source="linux-tkg"), plan=True)
    s2 = kernel_source.source_tree(tkg)
    assert s2.planned and any("linux-tkg" in c for c in s2.commands) and any("makepkg" in c for c in s2.commands)
