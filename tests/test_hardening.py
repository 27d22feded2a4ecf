"""Hardening: kernel command line security, journald, ssh, masking, idle CPU."""
from pathlib import Path

import pytest

from aios_lib.facts import load
from aios_lib.service import hardening
from aios_lib.params import ParamsError
from aios_lib.params.kernel_cmdline import MITIGATIONS_WARNING

FIX = Path(__file__).resolve().parent / "fixtures" / "service"


def test_mitigations_off_refused_without_trusted_offline(make_run, tmp_path):
    """Refused when the parameters load, before phase 6 (or any phase) has a run to record into."""
    with pytest.raises(ParamsError) as e:
        make_run({"system": {"kernel_cmdline": ["mitigations=off", "nowatchdog"]}})
    assert e.value.problems == ["<test>: key `system.kernel_cmdline`: `mitigations=off` needs "
                                "machine.trusted_offline: true (it disables CPU vulnerability mitigations); "
                                "set it or remove mitigations=off"]
    assert not (tmp_path / "run").exists()


def test_mitigations_off_with_trusted_offline_carries_the_warning(make_run):
    run = make_run({"machine": {"trusted_offline": True},
                    "system": {"kernel_cmdline": ["mitigations=off", "console=ttyS0"]}})
    line = hardening.security_cmdline(run, root_ref="PARTUUID=abc", read_only=True)
    assert "mitigations=off" in line.tokens and line.mitigations_off
    for w in ("audit=0", "nowatchdog", "nmi_watchdog=0", "ro", "systemd.volatile=overlay", "root=PARTUUID=abc"):
        assert w in line.tokens, w
    assert "rw" not in line.tokens
    assert line.tokens == ["root=PARTUUID=abc", "ro", "mitigations=off", "console=ttyS0", "audit=0", "nowatchdog",
                           "nmi_watchdog=0", "systemd.volatile=overlay"]
    assert line.added == ["audit=0", "nowatchdog", "nmi_watchdog=0"]
    rec = run.recorded("test", "cmdline")
    assert rec["mitigations_off"] and rec["warnings"] == [MITIGATIONS_WARNING] and rec["tokens"] == line.tokens


def test_blueprint_words_are_refused():
    """The blueprint's `auditing=0 logic=no` are not kernel parameters: refused when the file loads."""
    from aios_lib.params import parse_params

    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "system": {"kernel_cmdline": ["auditing=0"]}}, "<test>")
    assert e.value.problems == ["<test>: key `system.kernel_cmdline`: `auditing=0` is not a kernel parameter; "
                                "use audit=0 (got list)"]


def test_security_cmdline_keeps_words_already_there(make_run):
    run = make_run({"system": {"kernel_cmdline": ["audit=0", "console=ttyS0"]}})
    line = hardening.security_cmdline(run, root_ref="PARTUUID=abc")
    assert line.tokens == ["root=PARTUUID=abc", "rw", "audit=0", "console=ttyS0", "nowatchdog", "nmi_watchdog=0"]
    assert line.added == ["nowatchdog", "nmi_watchdog=0"] and line.warnings == [] and not line.mitigations_off
    assert run.params.system.kernel_cmdline == ["audit=0", "console=ttyS0"]  # the parameters are not changed


def test_journald_dropin(make_run, tmp_path):
    """Phase 06 shows the drop-in phase 02 writes: one implementation, the setting's."""
    run = make_run()
    text = hardening.journald_text(run)
    assert hardening.parse_journald_config(text) == {"Storage": "volatile", "SystemMaxUse": "50M",
                                                     "RuntimeMaxUse": "50M"}
    from aios_lib.settings import apply_settings, journald

    rows = apply_settings(run.runner, [journald.Journald(run.params.system.journald)], root=tmp_path)
    assert rows[0].ok and (tmp_path / journald.PATH.lstrip("/")).read_text() == text


def test_ssh_masked_when_local_only(make_run, tmp_path):
    run = make_run()
    assert {"ssh.service", "ssh.socket"} <= set(hardening.mask_list(run))
    assert "bluetooth.service" in hardening.mask_list(run) and "cron.service" in hardening.mask_list(run)
    run2 = make_run({"service": {"ssh": True}})
    assert "ssh.service" not in hardening.mask_list(run2)


def test_mask_units_in_a_real_tree(make_run, tmp_path):
    """systemctl --root= masks without systemd running (a copy of this host's unit files)."""
    import shutil

    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    run = make_run()
    rec = hardening.mask_units(run, root)
    link = root / "etc/systemd/system/ssh.service"
    assert link.is_symlink() and str(link.readlink()) == "/dev/null"
    assert (root / "etc/systemd/system/cron.service").is_symlink()
    assert "ssh.service" in rec["masked"]
    # every unit is masked, installed or not; the record says which are installed in the tree
    shipped = {u for u in rec["masked"] if (root / "usr/lib/systemd/system" / u).is_file()
               and not (root / "usr/lib/systemd/system" / u).is_symlink()}
    assert rec["installed_in_target"] == sorted(shipped) and set(rec["masked"]) - shipped
    assert all((root / "etc/systemd/system" / u).is_symlink() for u in rec["masked"])
    mask = [r for r in run.runner.history if r.argv[:2] == ["systemctl", f"--root={root}"]]
    assert len(mask) == 1 and mask[0].note == "service reduction (blueprint 5.1)"


def test_idle_cpu_from_proc_stat():
    before = (FIX / "proc-stat-before.txt").read_text()
    after = (FIX / "proc-stat-after.txt").read_text()
    res = hardening.idle_cpu(before, after, 5)
    a, b = load.parse_proc_stat(before), load.parse_proc_stat(after)
    total = b.total - a.total
    assert res.ticks == total and 0 <= res.busy_pct <= 100
    assert res.busy_ticks == total - (b.idle_all - a.idle_all)
    idle = hardening.idle_cpu("cpu  10 0 10 1000 0 0 0 0 0 0", "cpu  10 0 11 1999 0 0 0 0 0 0", 10)
    assert idle.busy_pct == pytest.approx(0.1) and not idle.meets_goal
    with pytest.raises(ValueError):
        hardening.idle_cpu(after, before, 5) if b.total > a.total else load.parse_proc_stat("")
