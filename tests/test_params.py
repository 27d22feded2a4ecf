import subprocess
import sys
from pathlib import Path

import pytest

from aios_lib.params import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "parameters").glob("*.yaml")))
def test_shipped_parameter_files_are_valid(name, capsys):
    from aios_lib import cli

    p = load_params(ROOT / "parameters" / name)
    assert p.schema_version == 1
    assert cli.main(["check", str(ROOT / "parameters" / name)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{ROOT / 'parameters' / name}: valid (schema_version 1)")
    assert out[1:] == [f"warning: {ROOT / 'parameters' / name}: {w}" for w in p.warnings]


def test_default_touches_no_disk():
    p = load_params(ROOT / "parameters" / "default.yaml")
    assert p.target.kind == "none" and p.target.what is None


def _write(tmp_path, text):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return f


def test_unknown_key_is_one_line_with_suggestion(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitons: 3\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert len(e.value.problems) == 1
    line = e.value.problems[0]
    assert str(f) in line and "runtime.bench.repetitons" in line and "repetitions" in line


def test_wrong_type(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitions: many\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "runtime.bench.repetitions" in str(e.value) and "'many'" in str(e.value)


def test_impossible_value(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitions: 0\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "greater than or equal to 1" in str(e.value)


def test_missing_schema_version(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "machine:\n  name: x\n"))
    assert "schema_version: 1" in str(e.value)


def test_newer_schema_version(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "schema_version: 9\n"))
    assert "newer" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(tmp_path / "nope.yaml")
    assert "no such parameter file" in str(e.value)


def test_bad_yaml(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "schema_version: [1\n"))
    assert "not valid YAML" in str(e.value)


def test_disk_target_needs_device():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "target": {"kind": "disk"}})
    assert "target.device" in str(e.value)


def test_git_source_must_be_pinned():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "runtime": {"llama": {"source": {"provider": "git"}}}})
    assert "ref" in str(e.value)


def test_confirmation_must_match_exactly():
    p = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/disk/by-id/nvme-X",
                                                      "confirm": "/dev/nvme0n1"}})
    assert not p.target.confirmed
    p = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/disk/by-id/nvme-X",
                                                      "confirm": "/dev/disk/by-id/nvme-X"}})
    assert p.target.confirmed


@pytest.mark.parametrize("text,needle", [
    ("schema_version: 1\nbogus: 1\n", "unknown key `bogus`"),
    ("schema_version: 1\nruntime: {bench: {threads: lots}}\n", "runtime.bench.threads"),
    (None, "no such parameter file"),
])
def test_cli_exit_2_with_one_line(tmp_path, text, needle):
    f = tmp_path / "p.yaml"
    if text is not None:
        f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "plan", "--params", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) >= 1 and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_help_explains():
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "list every command, change nothing" in r.stdout
    assert "target.confirm" in r.stdout


MITIGATIONS_FIX = ("`mitigations=off` needs machine.trusted_offline: true (it disables CPU vulnerability "
                   "mitigations); set it or remove mitigations=off")


# one file per rule `aios run` used to apply only when a phase reached it: `aios check` refuses each
@pytest.mark.parametrize("text,key,message", [
    # between sections: mitigations=off on a target's command line needs a trusted offline machine
    ("system:\n  kernel_cmdline: [audit=0, mitigations=off]\n", "system.kernel_cmdline", MITIGATIONS_FIX),
    ("kernel:\n  install:\n    cmdline: [nohz_full=1, mitigations=off]\n", "kernel.install.cmdline",
     MITIGATIONS_FIX),
    # the command-line rules (once in build_cmdline and kernel install, now in the model)
    ("system:\n  kernel_cmdline: [audit=0, logic=no]\n", "system.kernel_cmdline",
     "`logic=no` is not a kernel parameter; it means nothing to the kernel: remove it (got list)"),
    ("kernel:\n  install:\n    cmdline: [auditing=0]\n", "kernel.install.cmdline",
     "`auditing=0` is not a kernel parameter; use audit=0 (got list)"),
    ("kernel:\n  boot:\n    cmdline: [console=ttyS0, bogus_switch=1]\n", "kernel.boot.cmdline",
     "`bogus_switch=1` is not a known kernel parameter (Linux 6.12 kernel-parameters.txt, module.param or "
     "systemd.*/rd.*); remove or fix it (got list)"),
    # the filesystem and its mount options (once re-checked by the base-system phase and fstab)
    ("system:\n  filesystem: xfs\n  mount_options: [noatime, commit=60]\n", "system.mount_options",
     "mount option `commit=60`: `commit=60` is for ext4 and btrfs only; xfs does not take it. Remove it from "
     "system.mount_options (got list)"),
    ("system:\n  filesystem: ext4\n  mount_options: [noatime, discard=async]\n", "system.mount_options",
     "mount option `discard=async`: ext4 takes `discard` without a value; `discard=async` is btrfs-only. Use "
     "`discard` (or run fstrim.timer) instead (got list)"),
    ("system:\n  filesystem: ext4\n  mount_options: [noatime, relatime]\n", "system.mount_options",
     "mount options ['noatime', 'relatime'] are conflicting atime policies: keep one (got list)"),
    # a disk target by a name that can point at another disk after a reboot (once phase 02 only)
    ("target:\n  kind: disk\n  device: /dev/sdb\n  confirm: /dev/sdb\n", "target.device",
     "'/dev/sdb' is not a stable name; name the disk by /dev/disk/by-id/... so the confirmation cannot point "
     "at another disk after a reboot"),
])
def test_check_refuses_what_a_run_would_refuse(tmp_path, text, key, message):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\n" + text)
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "check", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    assert [l for l in r.stderr.splitlines() if l.strip()] == [f"aios: {f}: key `{key}`: {message}"]


def test_check_prints_what_is_allowed_but_worth_saying(tmp_path):
    """A THP mode the command line contradicts stays a warning (the tmpfiles.d setting wins)."""
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nmachine: {name: box, trusted_offline: true}\n"
                 "system:\n  thp: never\n  mount_options: [noatime, nodiratime]\n"
                 "  kernel_cmdline: [mitigations=off, transparent_hugepage=always]\n")
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "check", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines() == [
        f"{f}: valid (schema_version 1); machine box; phases 01, 04, 05, 07; target none",
        f"warning: {f}: key `system.mount_options`: `nodiratime` is implied by `noatime`; dropped",
        f"warning: {f}: key `system.kernel_cmdline`: mitigations=off disables CPU vulnerability mitigations "
        "(Spectre, Meltdown, MDS...): only for a trusted machine on an offline network",
        f"warning: {f}: key `system.kernel_cmdline`: transparent_hugepage=always on the command line differs from "
        "system.thp=never; the tmpfiles.d setting wins after boot",
    ]


def test_rules_between_sections_report_every_problem_one_line_each():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "system": {"kernel_cmdline": ["mitigations=off"]},
                      "kernel": {"install": {"cmdline": ["mitigations=off"]}}}, "<t>")
    assert e.value.problems == [f"<t>: key `system.kernel_cmdline`: {MITIGATIONS_FIX}",
                                f"<t>: key `kernel.install.cmdline`: {MITIGATIONS_FIX}"]


def test_a_rule_inside_a_section_prints_as_file_and_message():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "kernel": {"base_config": "file"}}, "<t>")
    assert e.value.problems == ["<t>: kernel.base_config is 'file' but kernel.base_config_file is empty: give the path"]
