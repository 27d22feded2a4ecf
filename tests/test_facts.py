"""Fact parsers on captured real output (tests/fixtures/facts/<machine>/), and live checks on this machine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aios_lib.facts import cpu as cpu_fact
from aios_lib.facts._text import (format_cpulist, parse_cpulist, parse_lscpu, parse_lscpu_p, parse_size)
from aios_lib.facts.base import Fact, gather, gather_outputs
from aios_lib.facts.survey import FACTS, capture_fixture, load_fixture, parse_outputs, survey

FIX = Path(__file__).resolve().parent / "fixtures" / "facts"
MACHINES = sorted(p.name for p in FIX.iterdir() if p.is_dir())


def parsed(machine: str, fact: str):
    return FACTS[fact].parse(load_fixture(FIX / machine, FACTS[fact]))


def test_fixture_folders_name_their_origin():
    assert {"dev-vm-xeon-kvm", "i7-12700kf-desktop-hybrid", "ultra9-185h-meteor-lake-hybrid",
            "epyc-7451-zen1"} <= set(MACHINES)
    for m in MACHINES:
        readme = (FIX / m / "README.md").read_text()
        assert "http" in readme or "captured" in readme.lower(), m


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize("fact", sorted(FACTS))
def test_every_parser_handles_every_machine(machine, fact):
    """Each parse function takes any machine's output (missing files read as empty) and gives JSON."""
    out = parsed(machine, fact)
    assert isinstance(out, dict)
    assert json.loads(json.dumps(out)) == out


# ---- helpers ---------------------------------------------------------------------------------

def test_cpulist_roundtrip():
    assert parse_cpulist("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    assert format_cpulist([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"


def test_sizes():
    assert parse_size("48K") == 48 * 1024
    assert parse_size("96 KiB (2 instances)") == 96 * 1024
    assert parse_size("11.5 MiB") == int(11.5 * 1024**2)
    assert parse_size("32536456 kB") == 32536456 * 1024
    assert parse_size("") is None


@pytest.mark.parametrize("family,model,stepping,vendor,want", [
    (6, 0x97, 2, "GenuineIntel", "Alder Lake"),
    (6, 0x9A, 3, "GenuineIntel", "Alder Lake"),
    (6, 0xB7, 1, "GenuineIntel", "Raptor Lake"),
    (6, 0x8C, 1, "GenuineIntel", "Tiger Lake"),
    (6, 0x9E, 10, "GenuineIntel", "Coffee Lake"),
    (6, 0x9E, 9, "GenuineIntel", "Kaby Lake"),
    (6, 0x55, 4, "GenuineIntel", "Skylake-SP/X"),
    (6, 0x55, 7, "GenuineIntel", "Cascade Lake"),
    (6, 0x3D, 4, "GenuineIntel", "Broadwell"),
    (6, 0x5E, 3, "GenuineIntel", "Skylake"),
    (0x17, 0x01, 2, "AuthenticAMD", "Zen"),
    (0x17, 0x31, 0, "AuthenticAMD", "Zen 2"),
    (0x19, 0x21, 0, "AuthenticAMD", "Zen 3"),
    (0x19, 0x61, 2, "AuthenticAMD", "Zen 4"),
    (0x1A, 0x44, 0, "AuthenticAMD", "Zen 5"),
    (6, 0x01, 0, "GenuineIntel", None),
])
def test_generation_table(family, model, stepping, vendor, want):
    assert cpu_fact.generation(vendor, family, model, stepping) == want


# ---- this machine, captured ---------------------------------------------------------------------

def test_dev_vm_cpu():
    c = parsed("dev-vm-xeon-kvm", "cpu")
    assert (c["vendor"], c["family"], c["model"], c["generation"]) == ("GenuineIntel", 6, 207, "Emerald Rapids")
    assert (c["sockets"], c["physical_cores"], c["logical_cpus"], c["threads_per_core"]) == (1, 2, 2, 1)
    assert c["hybrid"] is None and c["smt"] is False
    assert c["isa"]["avx2"] and c["isa"]["fma"] and c["isa"]["f16c"]
    assert "avx512f" in c["isa"]["avx512"] and c["isa"]["avx512_vnni"] and c["isa"]["amx"] == []
    # per-instance sizes from cpu0's sysfs cache dir agree with lscpu's totals / instances
    assert c["caches"]["L1d"]["per_instance_bytes"] == 48 * 1024
    assert c["caches"]["L2"]["per_instance_bytes"] * c["caches"]["L2"]["instances"] == c["caches"]["L2"]["total_bytes"]
    assert c["hypervisor_vendor"] == "KVM"


def test_dev_vm_system_facts():
    m = parsed("dev-vm-xeon-kvm", "memory")
    meminfo = (FIX / "dev-vm-xeon-kvm" / "meminfo.txt").read_text()
    kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    assert m["total_bytes"] == kb * 1024 and 0 < m["available_bytes"] <= m["total_bytes"]
    assert m["hugepage_size_bytes"] == 2 * 1024**2 and m["modules"] == [] and m["speed_mts"] is None
    assert parsed("dev-vm-xeon-kvm", "firmware")["uefi"] is False
    v = parsed("dev-vm-xeon-kvm", "virt")
    assert (v["vm"], v["container"], v["hypervisor_flag"], v["virtual"]) == ("kvm", "docker", True, True)
    k = parsed("dev-vm-xeon-kvm", "kernel")
    assert k["thp_enabled"] == "madvise" and k["release"].startswith("6.")
    assert k["vulnerabilities_source"] == "sysfs" and len(k["vulnerabilities"]) == 19
    assert k["vulnerabilities"]["retbleed"] == "Vulnerable"
    assert sum(k["vulnerability_counts"].values()) == 19
    d = parsed("dev-vm-xeon-kvm", "disks")
    assert d["root_disk"] == "/dev/vda"
    vda = next(x for x in d["disks"] if x["name"] == "vda")
    assert vda["holds_root"] and vda["size_bytes"] == 256 * 1024**3
    assert next(x for x in d["disks"] if x["name"] == "zram0")["virtual_device"]
    n = parsed("dev-vm-xeon-kvm", "numa")
    assert n["count"] == 1 and n["nodes"][0]["cpus"] == "0-1"
    g = parsed("dev-vm-xeon-kvm", "gpu")
    assert g["count"] == 0 and g["pci_devices"] == 6  # virtio devices only, no display controller


# ---- public samples -------------------------------------------------------------------------------

def test_i7_12700kf_hybrid_desktop():
    c = parsed("i7-12700kf-desktop-hybrid", "cpu")
    assert c["model_name"] == "12th Gen Intel(R) Core(TM) i7-12700KF"
    assert (c["generation"], c["model_hex"]) == ("Alder Lake", "0x97")
    assert (c["physical_cores"], c["logical_cpus"], c["threads_per_core"]) == (12, 20, 2)
    assert (c["hybrid"]["p_cores"], c["hybrid"]["e_cores"]) == (8, 4)  # Intel: 8 P + 4 E
    assert c["hybrid"]["source"].startswith("inferred")
    assert c["isa"]["avx2"] and c["isa"]["avx_vnni"] and c["isa"]["avx512"] == []
    # the Flags value was chopped at the terminal width inside words ("tsc_known_" / "freq"): rejoined
    assert {"tsc_known_freq", "vnmi", "hwp_epp"} <= set(c["flags"]) and not {"freq", "nmi", "pp"} & set(c["flags"])
    assert c["caches"]["L3"]["total_bytes"] == 25 * 1024**2 and c["caches"]["L2"]["instances"] == 9
    # the tree layout's "Vulnerabilities:" section maps onto the flat names
    k = parsed("i7-12700kf-desktop-hybrid", "kernel")
    assert k["vulnerabilities_source"] == "lscpu" and len(k["vulnerabilities"]) == 13
    assert k["vulnerabilities"]["spec_store_bypass"].startswith("Mitigation")


def test_meteor_lake_hybrid_from_lscpu_p():
    c = parsed("ultra9-185h-meteor-lake-hybrid", "cpu")
    assert c["generation"] == "Meteor Lake" and c["hybrid_capable_model"]
    assert (c["physical_cores"], c["logical_cpus"], c["sockets"]) == (16, 22, 1)
    hy = c["hybrid"]
    assert (hy["p_cores"], hy["e_cores"], hy["p_cpus"], hy["e_cpus"]) == (6, 10, "0-11", "12-21")
    assert hy["source"].startswith("lscpu -p")
    assert c["isa"]["avx_vnni"] and not c["isa"]["avx512"]


def test_epyc_two_sockets_eight_numa_nodes():
    c = parsed("epyc-7451-zen1", "cpu")
    assert (c["vendor"], c["generation"]) == ("AuthenticAMD", "Zen")
    assert (c["sockets"], c["physical_cores"], c["logical_cpus"], c["threads_per_core"]) == (2, 48, 96, 2)
    assert c["hybrid"] is None and c["isa"]["avx2"] and not c["isa"]["avx512"]
    # old lscpu prints one instance's cache size
    assert c["caches"]["L2"] == {"per_instance_bytes": 512 * 1024, "lscpu": "512K"}
    n = parsed("epyc-7451-zen1", "numa")
    assert n["count"] == 8 and n["source"] == "lscpu" and all(x["n_cpus"] == 12 for x in n["nodes"])
    assert parsed("epyc-7451-zen1", "kernel")["vulnerabilities"] == {}


def test_dmidecode_memory_modules():
    m = parsed("dell-r-series-ddr4-server", "memory")
    assert [x["locator"] for x in m["modules"]] == ["A1", "A2", "A4"]  # A3 is empty
    assert m["module_types"] == ["DDR4"] and m["speed_mts"] == 2666  # configured, not rated 3200


def test_lscpu_p_reads_column_names_from_header():
    rows = parse_lscpu_p((FIX / "epyc-7451-zen1" / "lscpu_p.txt").read_text())
    assert len(rows) == 96 and rows[48] == {"cpu": 48, "core": 0, "socket": 0, "node": 0, "l1d": 0, "l1i": 0,
                                            "l2": 0, "l3": 0}


# ---- live: this machine, through the runner ------------------------------------------------------

def test_live_cores_and_flags_match_lscpu(runner):
    """What the cpu fact reports equals what lscpu says, parsed independently."""
    c = gather(runner, cpu_fact.FACT)
    pairs = {tuple(line.split(",")) for line in runner.probe(["lscpu", "-p=CORE,SOCKET"]).stdout.splitlines()
             if line and not line.startswith("#")}
    assert c["physical_cores"] == len(pairs)
    text = runner.probe(["lscpu"]).stdout
    flags = set(next(line for line in text.splitlines() if line.startswith("Flags:")).split(":", 1)[1].split())
    assert set(c["flags"]) == flags
    assert c["isa"]["avx2"] == ("avx2" in flags) and c["isa"]["fma"] == ("fma" in flags)
    assert c["isa"]["f16c"] == ("f16c" in flags) and c["isa"]["avx_vnni"] == ("avx_vnni" in flags)
    assert c["isa"]["avx512"] == sorted(f for f in flags if f.startswith("avx512"))
    assert c["isa"]["amx"] == sorted(f for f in flags if f.startswith("amx"))
    cpus = int(next(line for line in text.splitlines() if line.startswith("CPU(s):")).split(":")[1])
    assert c["logical_cpus"] == cpus


def test_live_survey_is_journaled_and_complete(runner):
    s = survey(runner)
    assert set(s) == set(FACTS)
    assert s["memory"]["total_bytes"] > 0 and s["kernel"]["release"]
    lines = [json.loads(x) for x in Path(runner.journal.path).read_text().splitlines()]
    argvs = [tuple(x["argv"]) for x in lines]
    assert ("cat", "/proc/cpuinfo") in argvs and ("lscpu", "-J") in argvs
    assert argvs.count(("cat", "/proc/cpuinfo")) == 1  # shared by cpu and virt, run once
    assert all(x["kind"] == "probe" for x in lines)


def test_live_survey_runs_in_plan_mode(tmp_path):
    """Facts are read-only probes: a plan-mode runner still reads them."""
    from aios_lib.core.journal import Journal
    from aios_lib.core.runner import Runner

    r = Runner(journal=Journal(tmp_path / "j.jsonl"), plan=True)
    s = survey(r)
    assert s["cpu"]["logical_cpus"] and not r.planned()


def test_fallback_command_used_when_primary_fails(runner):
    fact = Fact("t", {"lscpu": ("lscpu", "--no-such-option")}, parse=lambda o: parse_lscpu(o["lscpu"]),
                fallbacks={"lscpu": ("lscpu",)})
    out = gather(runner, fact)
    assert out["CPU(s)"] and [h.rc != 0 for h in runner.history] == [True, False]


def test_optional_command_failure_reads_empty(runner):
    fact = Fact("t", {"x": ("cat", "/nonexistent/file")}, parse=dict, optional=frozenset({"x"}))
    assert gather_outputs(runner, fact) == {"x": ""}


def test_capture_fixture_roundtrip(runner, tmp_path):
    written = capture_fixture(runner, tmp_path / "m")
    assert (tmp_path / "m" / "lscpu.txt") in written
    outs = {name: load_fixture(tmp_path / "m", fact) for name, fact in FACTS.items()}
    assert parse_outputs(outs)["cpu"] == gather(runner, cpu_fact.FACT)


def test_vm_on_hybrid_host_shows_no_hybrid_split():
    """A guest sees the topology the hypervisor invents: Alder Lake by CPUID, but no P/E split."""
    c = parsed("i7-12700k-kvm-guest", "cpu")
    assert c["generation"] == "Alder Lake" and c["hybrid_capable_model"]
    assert (c["physical_cores"], c["logical_cpus"], c["hybrid"]) == (8, 16, None)
    assert c["hypervisor_vendor"] == "KVM" and "hypervisor" in c["flags"]
    v = parsed("i7-12700k-kvm-guest", "virt")
    assert v["virtual"] and v["hypervisor_flag"] and v["summary"] == "virtual machine (KVM, from lscpu)"
    assert parsed("i7-12700kf-desktop-hybrid", "virt")["summary"] == "bare metal"


def test_lscpu_json_tree_layout():
    """Newer util-linux nests lscpu -J fields under "children" and shortens cache names."""
    c = parsed("i7-8750h-lscpu-json-tree", "cpu")
    assert (c["model"], c["stepping"], c["generation"]) == (158, 10, "Coffee Lake")
    assert (c["physical_cores"], c["logical_cpus"], c["threads_per_core"], c["hybrid"]) == (6, 12, 2, None)
    assert c["caches"]["L2"]["total_bytes"] == int(1.5 * 1024**2) and c["caches"]["L3"]["instances"] == 1
    assert c["isa"]["avx2"] and c["isa"]["fma"] and c["isa"]["avx512"] == [] and c["max_mhz"] == 4100.0


def test_live_lsblk_old_column_fallback(runner):
    """util-linux < 2.37 rejects MOUNTPOINTS: the fallback asks for MOUNTPOINT and parses the same."""
    from aios_lib.facts import disks

    old = Fact("disks", {"lsblk": ("lsblk", "-J", "-b", "-o", "NAME,NO_SUCH_COLUMN"), "root": disks.FACT.commands["root"]},
               parse=disks.parse, fallbacks={"lsblk": disks.FACT.fallbacks["lsblk"]})
    via_fallback = gather(runner, old)
    assert runner.history[0].rc != 0 and "MOUNTPOINT," in runner.history[1].cmdline
    assert via_fallback["root_disk"] == gather(runner, disks.FACT)["root_disk"]
    assert [d["path"] for d in via_fallback["disks"]] == [d["path"] for d in gather(runner, disks.FACT)["disks"]]
