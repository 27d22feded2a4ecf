"""Facts about this host and its files: CPU flags and counts, installed packages, file texts,
sysctl values, systemd units, kernel trees. Parses on captured output, live reads read-only."""
import re

import pytest

from aios_lib.core.runner import CommandFailed
from aios_lib.facts import cpu, files, gather, gpu, kernel_tree, packages, sysctl, systemd
from aios_lib.facts.survey import load_fixture


def test_cpu_flags_and_counts(fixtures):
    o = load_fixture(fixtures / "facts" / "dev-vm-xeon-amx", cpu.FLAGS)
    flags = cpu.FLAGS.parse(o)
    survey_flags = cpu.FACT.parse(load_fixture(fixtures / "facts" / "dev-vm-xeon-amx", cpu.FACT))["flags"]
    assert set(flags) == set(survey_flags) and "avx2" in flags  # the survey's flags, read alone
    assert cpu.parse_flags({"cpuinfo": ""}) == []
    n = (fixtures / "cpus" / "nproc.txt").read_text()
    assert cpu.parse_count(n) == int(n.strip()) and cpu.parse_count("") is None and cpu.parse_count("x") is None


def test_cpu_counts_live(runner):
    usable, every = gather(runner, cpu.USABLE_CPUS), gather(runner, cpu.ALL_CPUS)
    assert 1 <= usable <= every
    assert [r.argv for r in runner.history] == [["nproc"], ["nproc", "--all"]]


def test_package_version(runner):
    assert packages.parse_dpkg_status("install ok installed 6.1.192-3", 0) == "6.1.192-3"
    assert packages.parse_dpkg_status("", 1) is None
    assert gather(runner, packages.package_version("no-such-package-synapse")) is None
    have = gather(runner, packages.package_version("coreutils"))
    assert have and re.match(r"^\d", have)


def test_kernel_tree_texts(runner, tmp_path):
    cfg = tmp_path / "base.config"
    cfg.write_text("CONFIG_HZ=250\n")
    assert gather(runner, kernel_tree.config_file(cfg)) == "CONFIG_HZ=250\n"
    # a plan goes on without the file; a real run stops at the read
    assert gather(runner, kernel_tree.config_file(tmp_path / "missing", required=False)) is None
    with pytest.raises(CommandFailed):
        gather(runner, kernel_tree.config_file(tmp_path / "missing"))
    assert kernel_tree.running_config().commands["text"] == ("zcat", "/proc/config.gz")
    assert kernel_tree.parse_release("6.12.57-synapse\n") == "6.12.57-synapse"
    rel = kernel_tree.kernelrelease(["echo", "6.12.57-synapse"])
    assert gather(runner, rel) == "6.12.57-synapse"


def test_file_text(runner, tmp_path):
    (tmp_path / "empty").write_text("")
    assert gather(runner, files.text(tmp_path / "empty")) == ""  # empty, not missing
    assert gather(runner, files.text(tmp_path / "missing")) is None
    assert files.parse_text({"text": "x", "text.stderr": "", "text.rc": 1}) is None


def test_sysctl_value(runner):
    assert sysctl.parse_value({"value": "1\n", "value.rc": 0}) == "1"
    assert sysctl.parse_value({"value": "", "value.rc": 255}) is None
    assert re.fullmatch(r"\d+", gather(runner, sysctl.value("kernel.pid_max")))
    assert gather(runner, sysctl.value("no.such.sysctl.synapse")) is None


def test_systemd_unit_reads(fixtures):
    d = fixtures / "service"
    # captured here: is-enabled of a masked unit (exit status 1), get-default, systemctl cat where
    # no systemd runs (the unit cannot be known)
    masked = (d / "systemctl-is-enabled-masked.txt").read_text()
    assert systemd.unit_state("cron.service").parse({"state": masked, "state.rc": 1}) == "masked"
    target = (d / "systemctl-get-default.txt").read_text()
    assert systemd.DEFAULT_TARGET.parse({"target": target, "target.rc": 0}) == "graphical.target"
    assert systemd.DEFAULT_TARGET.parse({"target": "", "target.rc": 1}) is None
    assert not systemd.parse_unit_known((d / "systemctl-cat-no-systemd.stderr.txt").read_text(), 1)
    assert systemd.parse_unit_known("", 0)
    # systemctl cat of a masked unit exits 1 and says so on stderr (systemd's message): it exists
    assert systemd.parse_unit_known("Unit ssh.service is masked.\n", 1)


def test_gpu_usage(fixtures):
    text = (fixtures / "panel" / "nvidia_smi_query_gpu.csv").read_text()
    gpus = gpu.USAGE.parse({"query": text, "query.stderr": "", "query.rc": 0})
    assert gpus and gpus[0].index == 0 and gpus[0].total > gpus[0].used > 0
    assert gpu.USAGE.parse({"query": "", "query.stderr": "not found", "query.rc": 127}) is None  # no driver
    assert gpu.USAGE.timeouts == {"query": 5}
