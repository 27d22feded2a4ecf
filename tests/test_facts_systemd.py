"""systemd-analyze verify/security and the running services, from captured output."""
from aios_lib.facts import memory, systemd
from aios_lib.system import vm


def test_verify_counts_ignored_lines_as_failures(fixtures):
    """systemd-analyze verify exits 0 on the blueprint's unit, but logs the two values it ignores."""
    stderr = (fixtures / "service" / "verify-blueprint-ollama.stderr.txt").read_text()
    v = systemd.parse_verify("ollama.service", 0, stderr)
    assert not v.ok and v.rc == 0 and len(v.problems) == 2
    assert "Invalid memory limit '28G  # Leave 4GB for OS'" in v.problems[0]
    assert systemd.parse_verify("/etc/systemd/system/ollama.service", 0, "").ok
    fact = systemd.verify("/tmp/root", "ollama.service")
    got = fact.parse({"verify": "", "verify.stderr": stderr, "verify.rc": 0})
    assert got.problems == v.problems and got.root == "/tmp/root" and not got.ok
    assert fact.commands["verify"] == ("systemd-analyze", "verify", "--root=/tmp/root", "ollama.service")


def test_security_fixture(fixtures):
    for name in ("security-llama-server.txt", "security-llama-server.C.txt"):
        text = (fixtures / "service" / name).read_text()
        s = systemd.security("/r", "llama-server.service").parse({"security": text, "security.rc": 0})
        assert s.unit == "llama-server.service" and s.level in systemd.LEVEL_RANK
        assert s.exposure is not None and 0 <= s.exposure <= 10 and s.ok_or_better
        assert len(s.rows) > 60 and any(not r["set"] for r in s.rows)


def test_running_services_from_a_booted_image(fixtures):
    report = vm.parse_guest_report((fixtures / "service" / "guest-boot1-serial.log").read_text(errors="replace"))
    running = systemd.parse_running(report["syn_running_services"].replace(",", "\n"))
    assert running[0] == "aios-guest-check-run.service" and "llama-server.service" in running
    assert len(running) == report["syn_running_services"].count(",") + 1
    assert systemd.parse_running("● foo.service loaded active running Foo\n") == ["foo.service"]


def test_meminfo_fact(fixtures, runner):
    text = (fixtures / "facts" / "dev-vm-xeon-amx" / "meminfo.txt").read_text()
    mi = memory.MEMINFO.parse({"meminfo": text})
    assert mi["MemTotal"] == memory.parse(  # the survey's total, from the same file
        {"meminfo": text, "dmidecode": ""})["total_bytes"] > 0
    from aios_lib.facts import gather

    assert gather(runner, memory.MEMINFO)["MemTotal"] > 0
