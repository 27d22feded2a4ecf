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


# ---- issue 14: values the target would reject or silently ignore ---------------------------------
# one bad file per rule: `aios check` exits 2 with one line naming the key, what is wrong and the fix
SEMANTIC_RULES = [
    # sysctl names against the shipped table, values against the kernel's ranges
    ("system:\n  sysctl: {vm.swapiness: 60}\n", "system.sysctl", "`vm.swapiness` is not a sysctl of Linux"),
    ("system:\n  sysctl: {vm.swappiness: 250}\n", "system.sysctl",
     "`vm.swappiness` = 250 is out of the kernel's range (0-200)"),
    ("system:\n  sysctl: {vm.dirty_ratio: -1}\n", "system.sysctl", "`vm.dirty_ratio` = -1 is out of the kernel's range"),
    ("system:\n  sysctl: {vm.page-cluster: lots}\n", "system.sysctl", "`vm.page-cluster`: 'lots' is not a whole number"),
    # documented (NOMMU kernels only), so in the table, but no x86 kernel has it: refused for this host
    ("system:\n  sysctl: {vm.nr_trim_pages: 0}\n", "system.sysctl",
     "`vm.nr_trim_pages` does not exist on this machine's kernel"),
    # journald.conf and unit values
    ("system:\n  journald: {Storage: ram}\n", "system.journald", "Storage=ram: journald takes one of"),
    ("system:\n  journald: {Storage: volatile, RuntimeMaxUse: 50 megabytes}\n", "system.journald",
     "RuntimeMaxUse=50 megabytes: '50 megabytes' is not a size"),
    ("system:\n  journald: {SystemMaxUse: 0M}\n", "system.journald", "is not a positive size"),
    ("system:\n  journald: {storage: volatile}\n", "system.journald",
     "`storage` is not a journald.conf option: journald would ignore it; did you mean `Storage`?"),
    ("system:\n  mask_units: [cron]\n", "system.mask_units", "`cron` is not a systemd unit name"),
    ("service:\n  mask_units: [apt-daily.timer, 'man db.timer']\n", "service.mask_units", "is not a systemd unit name"),
    ("system:\n  default_target: multi-user\n", "system.default_target", "e.g. multi-user.target"),
    ("system:\n  autologin_tty: serial0\n", "system.autologin_tty", "is not a terminal name"),
    ("system:\n  zram_size: half\n", "system.zram_size", "is not a zram-size expression"),
    ("service:\n  allow_networks: [10.0.0.0/33]\n", "service.allow_networks", "is not an IPAddressAllow= entry"),
    ("service:\n  host: localhost\n", "service.host", "`localhost` is not an IP address"),
    ("service:\n  data_dir: var/ai-data\n", "service.data_dir", "is not an absolute path"),
    ("service:\n  extra_args: ['--ctx-size 4096 # more']\n", "service.extra_args", "would break its unit file line"),
    # positive sizes
    ("runtime:\n  bench:\n    prompt_sizes: [512, 0]\n", "runtime.bench.prompt_sizes",
     "[0]: every token count must be at least 1"),
    ("runtime:\n  bench:\n    gen_sizes: [-128]\n", "runtime.bench.gen_sizes", "[-128]: every token count must be at least 1"),
    ("runtime:\n  bench:\n    gen_sizes: []\n", "runtime.bench.gen_sizes", "an empty list"),
    ("runtime:\n  bench:\n    threads: [0, 2]\n", "runtime.bench.threads", "every thread count must be at least 1"),
    ("runtime:\n  llama:\n    jobs: 0\n", "runtime.llama.jobs", "a build needs at least 1 job"),
    ("runtime:\n  bench:\n    quantizations: [Q4_K_X]\n", "runtime.bench.quantizations",
     "['Q4_K_X']: llama-quantize knows no such type"),
    ("target:\n  kind: image\n  image: x.img\n  image_size: '0'\n", "target.image_size", "a size of zero"),
    ("service:\n  data_size: 0G\n", "service.data_size", "a size of zero"),
    ("kernel:\n  boot:\n    memory: 0M\n", "kernel.boot.memory", "a size of zero"),
    ("kernel:\n  jobs: -2\n", "kernel.jobs", "a build needs at least 1 job"),
    # root as the service user
    ("service:\n  user: root\n", "service.user", "the inference service must not run as root"),
    # contradictions, inside a section and across sections
    ("service:\n  ram_gib: 2\n  memory_reserve_gib: 2\n", "service.memory_reserve_gib", "leaves less than 256 MiB"),
    ("service:\n  threads: 4\n  cpus: [0, 1]\n", "service.threads", "contradict each other"),
    ("kernel:\n  boot:\n    cpus: 2\n    cmdline: [console=ttyS0, nohz_full=1-3]\n", "kernel.boot.cmdline",
     "CPU 3 does not exist on 2 CPU(s)"),
    ("kernel:\n  options: {no_hz_full: y}\n", "kernel.options", "'no_hz_full' is not a Kconfig symbol"),
    ("phases: ['01', '02']\n", "target.kind", "phases lists 02, which partitions and installs a disk or an image"),
    ("phases: ['06']\ntarget:\n  kind: disk\n  device: /dev/disk/by-id/nvme-X\n", "target.kind",
     "phase 06 builds the Synapse OS image file, but target.kind is disk"),
    ("phases: ['06']\ntarget:\n  kind: image\n  image: x.img\nservice:\n  engine: ollama\n", "service.engine",
     "bundles llama-server only"),
    ("service:\n  enabled: true\n  ssh: true\n  mask_units: [ssh.service]\n", "service.ssh",
     "a masked ssh never starts"),
    ("system:\n  default_target: multi-user.target\n  mask_units: [multi-user.target]\n", "system.default_target",
     "would boot into a masked target"),
    ("system:\n  journald: {Storage: persistent}\nservice:\n  enabled: true\n", "system.journald",
     "Storage=persistent with service.read_only_root: true contradict each other"),
    ("kernel:\n  enabled: true\n  options: {TRANSPARENT_HUGEPAGE: n}\n  install: {enabled: true}\n", "kernel.options",
     "TRANSPARENT_HUGEPAGE=n builds a kernel without THP, but system.thp is madvise"),
    ("kernel:\n  enabled: true\n  options: {NO_HZ_FULL: n}\n  install: {enabled: true, cmdline: [nohz_full=1]}\n",
     "kernel.install.cmdline", "nohz_full= needs a kernel built with NO_HZ_FULL"),
]


@pytest.mark.parametrize("text,key,words", SEMANTIC_RULES, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(SEMANTIC_RULES)])
def test_check_refuses_values_the_target_would_reject(tmp_path, text, key, words):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\n" + text)
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "check", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"aios: {f}: key `{key}`: ") and words in lines[0], lines[0]


def test_duplicate_yaml_keys_are_refused_with_their_lines(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nruntime:\n  bench:\n    rounds: 3\n    repetitions: 5\n    rounds: 7\n")
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "check", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    assert [l for l in r.stderr.splitlines() if l.strip()] == [
        f"aios: {f}: line 6: key `runtime.bench.rounds` is given twice (first on line 4); YAML keeps only the last "
        "one: remove one of them"]
    # the same key in two different mappings is no duplicate
    f.write_text("schema_version: 1\nsystem:\n  thp: madvise\nkernel:\n  boot:\n    cpus: 2\n  install:\n    enabled: false\n"
                 "service:\n  vm_cpus: 2\n")
    assert load_params(f).kernel.boot.cpus == 2


def test_sysctl_names_exist_on_this_host_when_the_file_describes_it(tmp_path):
    """A name the shipped table knows but this kernel lacks: refused for this host, accepted for an image."""
    from aios_lib.params import sysctl_names

    proc = tmp_path / "proc-sys"
    (proc / "vm").mkdir(parents=True)
    (proc / "vm" / "swappiness").write_text("60\n")
    assert sysctl_names.check("vm.swappiness", 180, host=True, proc_sys=proc) is None
    problem = sysctl_names.check("vm.dirty_ratio", 10, host=True, proc_sys=proc)
    assert problem.startswith("`vm.dirty_ratio` does not exist on this machine's kernel")
    assert sysctl_names.check("vm.dirty_ratio", 10, host=False, proc_sys=proc) is None
    assert sysctl_names.is_shipped("net.ipv4.conf.eth7.rp_filter")  # any interface
    assert sysctl_names.on_this_host("vm.swappiness", proc) and not sysctl_names.on_this_host("vm.nope", proc)


def test_a_sysctl_of_another_kernel_is_fine_for_an_image(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(f"schema_version: 1\ntarget:\n  kind: image\n  image: {tmp_path / 'x.img'}\n"
                 "system:\n  sysctl: {vm.nr_trim_pages: 0, vm.swappiness: 180}\n")
    assert load_params(f).system.sysctl["vm.nr_trim_pages"] == 0


def test_sysctl_table_ships_documented_and_seen_names():
    from aios_lib.params import sysctl_names

    names, patterns = sysctl_names.shipped()
    assert {"vm.swappiness", "vm.page-cluster", "vm.dirty_ratio", "kernel.numa_balancing", "fs.file-max",
            "net.core.somaxconn", "net.ipv4.tcp_congestion_control"} <= names
    assert "net.ipv4.conf.*.rp_filter" in patterns
    header = sysctl_names.DATA.read_text().splitlines()[:5]
    assert any("docs-6.1" in line for line in sysctl_names.DATA.read_text().splitlines() if "vm.swappiness" in line)
    assert header[0].startswith("# sysctl names Synapse knows")


def test_a_module_list_not_captured_yet_is_a_warning_an_empty_one_an_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(f"schema_version: 1\nphases: ['03']\nkernel:\n  enabled: true\n  localmodconfig: true\n"
                 f"  lsmod_file: {tmp_path / 'later.txt'}\n")
    p = load_params(f)
    assert p.warnings_for("kernel.lsmod_file") == [
        f"{tmp_path / 'later.txt'} does not exist yet: `aios plan` shows the phase, `aios run` refuses it until the "
        "file is there (capture it on the target with `lsmod > FILE`)"]
    (tmp_path / "later.txt").write_text("Module                  Size  Used by\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "key `kernel.lsmod_file`" in str(e.value) and "names no modules" in str(e.value)
