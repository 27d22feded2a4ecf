"""Facts about the compiler (and the status and env a fact may use): parses on captured output,
plus the live reads (read-only) through a real runner."""
import re

from aios_lib.facts import gather, gather_outputs, toolchain
from aios_lib.facts.base import Fact


def test_status_commands_give_stdout_stderr_and_rc_without_raising(runner):
    fact = Fact("t", {"x": ("sh", "-c", "echo out; echo err >&2; exit 3")}, parse=dict, status=frozenset({"x"}))
    assert gather_outputs(runner, fact) == {"x": "out\n", "x.stderr": "err\n", "x.rc": 3, "x.timed_out": False}
    env = Fact("t", {"x": ("sh", "-c", "echo $SYNAPSE_T"), "y": ("sh", "-c", "echo ${SYNAPSE_T:-unset}")},
               parse=dict, env={"x": {"SYNAPSE_T": "set for x"}})
    assert gather(runner, env) == {"x": "set for x\n", "y": "unset\n"}  # only the command it is given to
    assert all(r.kind == "probe" for r in runner.history) and len(runner.history) == 3


def test_compiler_version_line_and_full_version(fixtures):
    d = fixtures / "toolchain"
    assert toolchain.parse_version_line((d / "cc-version.txt").read_text()) == "cc (Debian 12.2.0-14+deb12u1) 12.2.0"
    assert toolchain.parse_version_line((d / "cxx-version.txt").read_text()).startswith("c++ (Debian 12.2.0")
    assert toolchain.parse_version_line("") is None
    full = (d / "gcc-dumpfullversion.txt").read_text()
    assert toolchain.parse_full_version(full, 0) == "12.2.0"
    assert toolchain.parse_full_version("", 0) == "unknown"
    assert toolchain.parse_full_version("", 127) == "none"  # not installed: what the kernel key hashed


def test_compiler_facts_live(runner):
    line = gather(runner, toolchain.version_line("cc"))
    assert re.match(r"^cc \(.*\) \d+\.\d+", line)
    assert re.fullmatch(r"\d+\.\d+\.\d+", gather(runner, toolchain.full_version("gcc")))
    assert gather(runner, toolchain.full_version("no-such-compiler-synapse")) == "none"
    assert gather(runner, toolchain.version_line("no-such-compiler-synapse")) is None
    cc1 = gather(runner, toolchain.native_cc1("gcc"))
    assert cc1["march"] and "avx2" in cc1["enabled"]  # this project targets AVX2 machines
