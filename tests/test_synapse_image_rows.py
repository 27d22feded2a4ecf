"""The Synapse OS boot check's rows, from the serial logs of two real QEMU boots of the image
(captured from `boot_check.verify_image`; the slow test produces them afresh)."""
from pathlib import Path

import pytest

from aios_lib.facts.systemd import parse_running
from aios_lib.service import boot_check, hardening, image, readonly
from aios_lib.system import vm
from aios_lib.context import open_run
from aios_lib.params import load_params

FIX = Path(__file__).resolve().parent / "fixtures" / "service"
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = {"memory_high_bytes": 2 * 2**30, "placement": {"threads": 2, "cpus": [0, 1]}}


@pytest.fixture
def run(tmp_path):
    return open_run(load_params(ROOT / "parameters/synapse-os.yaml"), run_dir=tmp_path / "run", plan=True, phase="06")


def _report(name):
    return vm.parse_guest_report((FIX / name).read_text(errors="replace"))


def test_rows_from_a_real_boot(run):
    report = _report("guest-boot1-serial.log")
    rows = boot_check.synapse_rows(run, report, MANIFEST)
    asked = [r for r in rows if r.get("kind") != "goal"]
    assert asked and all(r["ok"] for r in asked), [r for r in asked if not r["ok"]]
    by = {r["check"]: r for r in rows}
    assert by["scheduling policy"]["in effect"].startswith("3 ")
    assert by["cgroup memory.high"]["in effect"] == str(2 * 2**30)
    assert "Paris" in by["completion from the bundled model (loopback)"]["in effect"]
    # the idle figure is computed from the two /proc/stat samples the guest printed
    idle = boot_check.idle_from(run, report)
    a = hardening.parse_proc_stat(report["syn_stat_before"])
    b = hardening.parse_proc_stat(report["syn_stat_after"])
    assert idle.ticks == b.total - a.total == 6014 and idle.busy_ticks == 14
    assert idle.busy_pct == pytest.approx(100 * 14 / 6014, abs=1e-3)
    running = parse_running(report["syn_running_services"].replace(",", "\n"))
    assert "llama-server.service" in running and not any(u.startswith("ssh") for u in running)


def test_rows_catch_a_wrong_setting(run):
    report = dict(_report("guest-boot1-serial.log"), syn_sched_policy="0", syn_nice="0",
                  syn_memory_high="max", syn_listening="0.0.0.0:22,127.0.0.1:8080")
    bad = {r["check"] for r in boot_check.synapse_rows(run, report, MANIFEST) if not r["ok"]}
    assert {"scheduling policy", "nice", "cgroup memory.high", "listening sockets", "ssh (local-only)"} <= bad


def test_double_boot_rows_from_real_boots():
    strip = lambda rep: {k.removeprefix("syn_"): v for k, v in rep.items() if k.startswith("syn_")}  # noqa: E731
    first, second = strip(_report("guest-boot1-serial.log")), strip(_report("guest-boot2-serial.log"))
    rows = readonly.persistence_rows(first, second)
    assert all(r["ok"] for r in rows), rows
    assert second["data_marker_before"] == first["data_marker_written"]
    assert second["root_marker_before"] == "absent"


def test_image_build_refuses_mitigations_off_before_anything(tmp_path):
    """mitigations=off without machine.trusted_offline is refused when the parameters load, so the
    image build (or any phase) never starts; with the machine declared trusted it goes ahead."""
    import yaml

    from aios_lib.params import ParamsError, parse_params
    from aios_lib.params.kernel_cmdline import MITIGATIONS_WARNING

    data = yaml.safe_load((ROOT / "parameters/synapse-os.yaml").read_text())
    data["system"]["kernel_cmdline"] = data["system"]["kernel_cmdline"] + ["mitigations=off"]
    with pytest.raises(ParamsError) as e:
        parse_params(data, "<test>")
    assert e.value.problems == ["<test>: key `system.kernel_cmdline`: `mitigations=off` needs "
                                "machine.trusted_offline: true (it disables CPU vulnerability mitigations); "
                                "set it or remove mitigations=off"]
    # with the machine declared trusted and offline it goes ahead (planned), the warning recorded
    data["machine"]["trusted_offline"] = True
    run2 = open_run(parse_params(data, "<test>"), run_dir=tmp_path / "run2", plan=True, phase="06")
    img = image.build_image(run2)
    assert img.planned and "mitigations=off" in img.cmdline.tokens
    assert run2.recorded("06", "cmdline")["warnings"] == [MITIGATIONS_WARNING]


def test_empty_base_masked_list_is_not_taken_for_unmasked(run):
    """The base check's reading of the masked units can come back empty (D-Bus timeout under a
    loaded TCG host); the Synapse check's reading of the same command is then compared."""
    report = _report("guest-boot1-serial.log")
    exp = vm.Expectation(cmdline=[], masked=["ssh.service", "cron.service"])
    assert next(r for r in vm.compare(dict(report, masked=""), exp) if r["check"] == "masked units")["ok"] is False
    patched = dict(report, masked=report["syn_masked"].replace(",", " "))
    assert next(r for r in vm.compare(patched, exp) if r["check"] == "masked units")["ok"] is True
