"""QEMU boots: argv, acceleration choice, and parsing what the guest reports."""
import os
from pathlib import Path


from aios_lib.facts.kernel import bracketed
from aios_lib.system import vm

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "image"


def test_qemu_argv_uefi_snapshot_and_guest_check_marker():
    argv = vm.qemu_argv(disk="/x.img", firmware=("/code.fd", "/vars.fd"), vars_copy="/tmp/v.fd",
                        accel=vm.Accel("tcg", "test"))
    s = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64" and "-accel tcg,thread=multi" in s and "-cpu max" in s
    assert "file=/x.img,format=raw,if=virtio,cache=unsafe,snapshot=on" in s
    assert "if=pflash,format=raw,readonly=on,file=/code.fd" in s and "-no-reboot" in argv
    assert "type=11,value=aios-guest-check" in argv
    k = vm.qemu_argv(kernel="/bzImage", initrd="/init.cpio", append="console=ttyS0", accel=vm.Accel("kvm", "t"),
                     guest_check=False)
    assert "-kernel" in k and "-initrd" in k and "-append" in k and "pflash" not in " ".join(k)
    assert "-accel" in k and "kvm" in k and "type=11,value=aios-guest-check" not in k


def test_guest_report_has_its_own_serial_port_after_the_console():
    """The report channel is the second -serial (the guest's ttyS1), never the console's ttyS0."""
    argv = vm.qemu_argv(disk="/x.img", accel=vm.Accel("tcg", "t"), report_file="/run/verify-report.log")
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == ["stdio", "file:/run/verify-report.log"]
    plain = vm.qemu_argv(kernel="/bz", accel=vm.Accel("tcg", "t"), guest_check=False, report_file="/r.log")
    assert plain.count("-serial") == 1 and "file:/r.log" not in plain  # no check, no report port


def test_guest_check_writes_to_ttyS1_and_the_unit_does_not_hold_the_console():
    from aios_lib.system import sysconfig

    script = sysconfig.GUEST_CHECK.read_text()
    assert "port=ttyS1;" in script and "stty -F /dev/ttyS1" in script
    assert script.index("exec >/dev/$port") < script.index("AIOS-CHECK-BEGIN")
    assert "TTYPath" not in sysconfig.GUEST_CHECK_UNIT and "StandardOutput=tty" not in sysconfig.GUEST_CHECK_UNIT


def test_accel_can_be_forced_and_is_detected_by_trying(runner, monkeypatch):
    vm._ACCEL_CACHE.clear()
    monkeypatch.setenv("AIOS_QEMU_ACCEL", "tcg")
    assert vm.detect_accel(runner).name == "tcg"
    vm._ACCEL_CACHE.clear()
    monkeypatch.delenv("AIOS_QEMU_ACCEL")
    acc = vm.detect_accel(runner)
    assert acc.name in ("kvm", "tcg") and acc.reason
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert acc.name == "tcg"
    vm._ACCEL_CACHE.clear()


SERIAL = (
    "[  OK  ] Reached target multi-user.target\r\n"
    "synapse login: root (automatic login)\r\n"
    "root@synapse:~# \r\nAIOS-CHECK-BEGIN\r\n"
    "\x1b[0mAIOS-CHECK loader=systemd-boot 252.39\r\n"
    "AIOS-CHECK cmdline=initrd=\\synapse\\6.1.0-50-amd64\\initrd root=PARTUUID=ab rw audit=0\r\n"
    "root@synapse:~# AIOS-CHECK thp=always [madvise] never\r\n"
    "AIOS-CHECK zram_algorithm=lzo-rle lzo lz4 lz4hc 842 [zstd]\r\n"
    "AIOS-CHECK zram_disksize=2061529088\r\nAIOS-CHECK memtotal_kb=2013212\r\n"
    "AIOS-CHECK swaps=/dev/zram0:100\r\n"
    "AIOS-CHECK journal_run_files=1\r\nAIOS-CHECK journal_var_files=0\r\nAIOS-CHECK journal_runtime_max=50.0M\r\n"
    "AIOS-CHECK masked=apt-daily.timer e2scrub_reap.service\r\n"
    "AIOS-CHECK root_mount=/dev/vda2 xfs rw,noatime,attr2,inode64\r\n"
    "AIOS-CHECK default_target=multi-user.target\r\nAIOS-CHECK hostname=synapse\r\n"
    "AIOS-CHECK sysctl.vm.swappiness=180\r\nAIOS-CHECK failed_units=\r\n"
    "AIOS-CHECK boot_time=5.838s (kernel) + 12.988s (initrd) + 12.297s (userspace) = 31.124s \r\nAIOS-CHECK-END\r\n"
)


def expectation(**kw):
    base = dict(cmdline=["root=PARTUUID=ab", "rw", "audit=0"], masked=["apt-daily.timer", "e2scrub_reap.service"],
                hostname="synapse", sysctl={"vm.swappiness": "180"})
    base.update(kw)
    return vm.Expectation(**base)


def test_parse_report_tolerates_prompts_escapes_and_carriage_returns():
    r = vm.parse_guest_report(SERIAL)
    assert r["_begin"] == r["_end"] == "True"
    assert r["loader"] == "systemd-boot 252.39" and r["thp"] == "always [madvise] never"
    assert r["failed_units"] == "" and r["root_mount"].split()[1] == "xfs"


def test_compare_all_rows_match():
    rows = vm.compare(vm.parse_guest_report(SERIAL), expectation())
    bad = [r for r in rows if not r["ok"]]
    assert bad == []
    names = {r["check"] for r in rows}
    for n in ["boot loader", "kernel command line", "THP mode", "zram swap", "journal in /run only", "masked units",
              "root mount options", "failed units"]:
        assert n in names


def test_compare_reports_each_mismatch():
    text = SERIAL.replace("[madvise]", "madvise").replace("always madvise", "[always] madvise") \
        .replace("failed_units=", "failed_units=foo.service").replace("journal_var_files=0", "journal_var_files=3")
    rows = {r["check"]: r for r in vm.compare(vm.parse_guest_report(text), expectation(cmdline=["root=PARTUUID=ab", "rw"]))}
    assert rows["THP mode"]["ok"] is False and rows["THP mode"]["in effect"] == "always"
    assert rows["failed units"]["ok"] is False and rows["failed units"]["in effect"] == "foo.service"
    assert rows["journal in /run only"]["ok"] is False
    assert rows["kernel command line"]["ok"] is False
    assert rows["boot loader"]["ok"] is True


def test_missing_report_fails_every_row():
    rows = vm.compare(vm.parse_guest_report("no check here\n"), expectation())
    assert rows[0]["check"] == "guest check ran" and not rows[0]["ok"]
    assert not any(r["ok"] for r in rows if r["check"] in ("boot loader", "THP mode", "failed units"))


def test_boot_in_plan_mode_is_planned(tmp_path):
    from aios_lib.core.journal import Journal
    from aios_lib.core.runner import Runner

    rn = Runner(journal=Journal(tmp_path / "j.jsonl"), plan=True)
    res = vm.boot(rn, tmp_path / "none.img", workdir=tmp_path, expect=expectation())
    assert res.planned and res.ok and not list(tmp_path.glob("*.fd"))
    assert rn.history[-1].argv[0] == "qemu-system-x86_64" and rn.history[-1].planned


def test_real_serial_log_of_a_verified_boot():
    """The serial console of a real verification boot of parameters/image-debian.yaml (TCG, OVMF).

    Every expected value comes from that parameter file, as the phase builds it; from the fixture
    only the root partition's PARTUUID (random per image) is taken, spelled out below.
    """
    from aios_lib.params import load_params
    from aios_lib.params.mount_options import normalise_mount_options
    from aios_lib.system.cmdline import build_cmdline

    r = vm.parse_guest_report((FIX / "serial-debian.log").read_text(errors="replace"))
    assert r["_end"] == "True" and r["loader"].startswith("systemd-boot")
    p = load_params(ROOT / "parameters" / "image-debian.yaml")
    s = p.system
    # the units of system.mask_units that a minimal bookworm has (only existing units are masked)
    masked = ["apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
              "e2scrub_reap.service", "systemd-firstboot.service"]
    assert set(masked) <= set(s.mask_units)
    exp = vm.Expectation(
        cmdline=build_cmdline(p, "PARTUUID=6928aa57-cfb7-498e-9c40-5331f04dff17").tokens, thp=s.thp,
        zram_algorithm=s.zram_algorithm, zram_size=s.zram_size,
        journal_volatile=s.journald.get("Storage") == "volatile", journal_runtime_max=s.journald.get("RuntimeMaxUse"),
        masked=masked, root_fstype=s.filesystem, root_options=normalise_mount_options(s.filesystem, s.mount_options)[0],
        default_target=s.default_target, hostname=s.hostname, sysctl={k: str(v) for k, v in s.sysctl.items()})
    assert bracketed(r["thp"]) == s.thp and bracketed(r["zram_algorithm"]) == s.zram_algorithm
    rows = {x["check"]: x for x in vm.compare(r, exp)}
    assert [x for x in rows.values() if not x["ok"]] == []
    assert {"kernel command line", "THP mode", "zram swap", "masked units", "root mount options", "hostname",
            "sysctl vm.swappiness", "sysctl vm.dirty_background_ratio", "failed units"} <= set(rows)
    # the command line row compares for real: one token more on the parameters' side fails it
    p.system.kernel_cmdline.append("mitigations=auto")
    exp.cmdline = build_cmdline(p, "PARTUUID=6928aa57-cfb7-498e-9c40-5331f04dff17").tokens
    assert not next(x for x in vm.compare(r, exp) if x["check"] == "kernel command line")["ok"]
