"""Facts about the compiler, the CPU counts, installed packages and kernel trees: parses on
captured output, plus the live reads (read-only) through a real runner."""
import re

import pytest

from aios_lib.core.runner import CommandFailed
from aios_lib.facts import cpu, gather, gather_outputs, kernel_tree, packages, toolchain
from aios_lib.facts.base import Fact
from aios_lib.facts.survey import load_fixture


def test_status_commands_give_stdout_stderr_and_rc_without_raising(runner):
    fact = Fact("t", {"x": ("sh", "-c", "echo out; echo err >&2; exit 3")}, parse=dict, status=frozenset({"x"}))
    assert gather_outputs(runner, fact) == {"x": "out\n", "x.stderr": "err\n", "x.rc": "3"}
    fed = Fact("t", {"x": ("cat",)}, parse=lambda o: o["x"], options={"x": {"input": "fed on stdin"}})
    assert gather(runner, fed) == "fed on stdin"
    assert all(r.kind == "probe" for r in runner.history) and len(runner.history) == 2


def test_compiler_version_line_and_full_version(fixtures):
    d = fixtures / "toolchain"
    assert toolchain.parse_version_line((d / "cc-version.txt").read_text()) == "cc (Debian 12.2.0-14+deb12u1) 12.2.0"
    assert toolchain.parse_version_line((d / "cxx-version.txt").read_text()).startswith("c++ (Debian 12.2.0")
    assert toolchain.parse_version_line("") is None
    full = (d / "gcc-dumpfullversion.txt").read_text()
    assert toolchain.parse_full_version(full, "0") == "12.2.0"
    assert toolchain.parse_full_version("", "0") == "unknown"
    assert toolchain.parse_full_version("", "127") == "none"  # not installed: what the kernel key hashed


def test_compiler_facts_live(runner):
    line = gather(runner, toolchain.version_line("cc"))
    assert re.match(r"^cc \(.*\) \d+\.\d+", line)
    assert re.fullmatch(r"\d+\.\d+\.\d+", gather(runner, toolchain.full_version("gcc")))
    assert gather(runner, toolchain.full_version("no-such-compiler-synapse")) == "none"
    assert gather(runner, toolchain.version_line("no-such-compiler-synapse")) is None
    cc1 = gather(runner, toolchain.native_cc1("gcc"))
    assert cc1["march"] and "avx2" in cc1["enabled"]  # this project targets AVX2 machines


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
    assert packages.parse_dpkg_status("install ok installed 6.1.192-3", "0") == "6.1.192-3"
    assert packages.parse_dpkg_status("", "1") is None
    assert gather(runner, packages.package_version("no-such-package-synapse")) is None
    have = gather(runner, packages.package_version("coreutils"))
    assert have and re.match(r"^\d", have)


def test_kernel_tree_texts(runner, tmp_path):
    cfg = tmp_path / "base.config"
    cfg.write_text("CONFIG_HZ=250\n")
    assert gather(runner, kernel_tree.config_file(cfg)) == "CONFIG_HZ=250\n"
    # a plan goes on without the file; a real run stops at the read
    assert gather(runner, kernel_tree.config_file(tmp_path / "missing", required=False)) == ""
    with pytest.raises(CommandFailed):
        gather(runner, kernel_tree.config_file(tmp_path / "missing"))
    assert kernel_tree.running_config().commands["text"] == ("zcat", "/proc/config.gz")
    assert kernel_tree.parse_release("6.12.57-synapse\n") == "6.12.57-synapse"
    rel = kernel_tree.kernelrelease(["echo", "6.12.57-synapse"])
    assert gather(runner, rel) == "6.12.57-synapse"
