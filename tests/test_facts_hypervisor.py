"""Facts that survive hypervisors: the CPU generation against the ISA flags and gcc, the firmware
(UEFI, BIOS or none at all), NUMA node memory against the total. Captured real output from VMs of
several hypervisors (tests/fixtures/facts/)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from aios_lib.facts import cpu as cpu_fact, firmware, numa, research
from aios_lib.facts.survey import FACTS, load_fixture, parse_outputs
from aios_lib.facts.toolchain import parse_cc1

FIX = Path(__file__).resolve().parent / "fixtures"


def survey_of(machine: str) -> dict:
    return parse_outputs({name: load_fixture(FIX / "facts" / machine, fact) for name, fact in FACTS.items()})


def march_of(path: Path) -> dict:
    """What ``NativeTarget.to_dict()`` holds of gcc's view, from a captured ``gcc -march=native -E -v -``."""
    return parse_cc1(path.read_text())


KVM_GCC = FIX / "llama" / "gcc12-march-native-E-v.txt"  # captured on dev-vm-xeon-kvm
AMX_GCC = FIX / "facts" / "dev-vm-xeon-amx" / "gcc-march-native-E-v.txt"


# ---- the CPU generation against its flags -------------------------------------------------------

def test_model_0xcf_without_amx_is_named_by_its_flags():
    """The machine of the committed record: CPUID says Emerald Rapids, the flags have no AMX, no
    BF16, no FP16, and gcc resolves -march=native to icelake-client."""
    s = survey_of("dev-vm-xeon-kvm")
    native = march_of(KVM_GCC)
    assert native["march"] == "icelake-client"
    check = research.cpu_generation(s, native).facts["check"]
    assert (check["reported"], check["flags_floor"], check["agrees"]) == ("Emerald Rapids", "Ice Lake", False)
    assert check["hidden"] == ["avx512_bf16", "avx_vnni", "amx_tile", "avx512_fp16"] and check["beyond"] == []
    assert check["sentence"] == (
        "the hypervisor reports model 0xCF (Emerald Rapids); the flags show Ice Lake or newer and lack AVX512-BF16, "
        "AVX-VNNI, AMX, AVX512-FP16, which every Emerald Rapids has (hidden by the hypervisor, or too new for an "
        "old kernel to list); gcc resolves -march=native to icelake-client; Synapse uses the flags")
    row = research.cpu_table(s, native).loc["generation check", "value"]
    assert row == check["sentence"]
    assert research.cpu_table(s, native).loc["gcc -march=native", "value"] == "icelake-client"
    a = research.cpu_generation(s, native)
    assert a.answer.startswith("Intel Ice Lake or newer by its flags") and "CPUID says Emerald Rapids" in a.answer
    assert "Disagreement:" in a.detail


def test_model_0xa7_with_amx_is_named_by_its_flags():
    """A VM whose CPUID model is a Rocket Lake number while the flags show AMX and AVX512-FP16."""
    s = survey_of("dev-vm-xeon-amx")
    native = march_of(AMX_GCC)
    assert native["march"] == "rocketlake" and "amx-tile" in native["enabled"]
    check = research.cpu_generation(s, native).facts["check"]
    assert (check["reported"], check["flags_floor"], check["agrees"]) == ("Rocket Lake", "Sapphire Rapids", False)
    assert {"amx_tile", "avx512_fp16"} <= set(check["beyond"]) and check["hidden"] == []
    assert check["sentence"].startswith("the hypervisor reports model 0xA7 (Rocket Lake); the flags show Sapphire "
                                        "Rapids or newer (")
    assert "which no Rocket Lake has" in check["sentence"]
    assert check["sentence"].endswith("gcc resolves -march=native to rocketlake; Synapse uses the flags")
    assert research.recorded_summary(s)["generation"] == "Sapphire Rapids or newer (by its flags)"
    assert research.recorded_summary(s)["generation_cpuid"] == "Rocket Lake"


def test_cloud_vm_with_masked_amx():
    """Google Cloud C3: Sapphire Rapids by model, BF16 and VBMI2 in the flags, AMX and FP16 not."""
    check = survey_of("gcp-c3-sapphire-rapids-kvm")["cpu"]["generation_check"]
    assert (check["reported"], check["flags_floor"]) == ("Sapphire Rapids", "Sapphire Rapids")
    assert check["hidden"] == ["avx_vnni", "amx_tile", "avx512_fp16"] and not check["agrees"]
    assert check["sentence"].startswith("the hypervisor reports model 0x8F (Sapphire Rapids); the flags lack AVX-VNNI")


@pytest.mark.parametrize("machine,hypervisor,generation,floor", [
    ("azure-d2s-v3-broadwell-hyperv", "Microsoft", "Broadwell-E/EP", "Haswell"),
    ("aws-i3-large-broadwell-xen", "Xen", "Broadwell-E/EP", "Haswell"),
    ("aws-c5-large-skylake-sp-kvm", "KVM", "Skylake-SP/X", "Skylake-SP/X"),
    ("i7-12700k-kvm-guest", "KVM", "Alder Lake", "Alder Lake"),
    ("i7-12700kf-desktop-hybrid", None, "Alder Lake", "Alder Lake"),
    ("epyc-7451-zen1", None, "Zen", "Excavator"),
])
def test_vms_whose_flags_agree_have_no_disagreement_row(machine, hypervisor, generation, floor):
    s = survey_of(machine)
    c = s["cpu"]
    assert (c["hypervisor_vendor"], c["generation"]) == (hypervisor, generation)
    check = c["generation_check"]
    assert check["checked"] and check["agrees"] and check["sentence"] is None and check["flags_floor"] == floor
    assert research.cpu_table(s).loc["generation check", "value"] == "agrees"
    assert research.recorded_summary(s)["generation"] == generation


def test_flag_floor_needs_every_marker_at_once():
    assert cpu_fact.generation_from_flags("GenuineIntel", {"avx", "avx2"})["floor"] == "Haswell"
    # BF16 alone is Cooper Lake, VBMI2 alone Ice Lake; both together first in Sapphire Rapids
    icl = {"avx", "avx2", "avx512f", "avx512_vnni", "avx512_vbmi2"}
    assert cpu_fact.generation_from_flags("GenuineIntel", icl)["floor"] == "Ice Lake"
    assert cpu_fact.generation_from_flags("GenuineIntel", icl | {"avx512_bf16"})["floor"] == "Sapphire Rapids"
    assert cpu_fact.generation_from_flags("GenuineIntel", set())["floor"] is None
    assert cpu_fact.generation_from_flags("CentaurHauls", {"avx"}) is None


def test_amx_on_an_amd_model_is_impossible():
    check = cpu_fact.generation_check("AuthenticAMD", "Zen 3", {"avx", "avx2", "amx_tile"}, virtual=True,
                                      model_hex="0x21")
    assert not check["agrees"] and "amx_tile" in check["beyond"]
    assert "which no Zen 3 has" in check["sentence"]


def test_gcc_alone_differing_by_name_is_no_disagreement():
    """gcc 12 calls a Raptor Lake "alderlake": the same ISA, so no row; icelake-client for an
    Emerald Rapids model is a different ISA, so it is said."""
    flags = {"avx", "avx2", "avx_vnni"}
    assert cpu_fact.generation_check("GenuineIntel", "Raptor Lake", flags, march="alderlake")["sentence"] is None
    spr = set(cpu_fact.GENERATION_MARKERS["Emerald Rapids"])
    check = cpu_fact.generation_check("GenuineIntel", "Emerald Rapids", spr, march="icelake-client")
    assert check["agrees"] and check["gcc_differs"] and "gcc resolves -march=native to icelake-client" in check["sentence"]


# ---- firmware: UEFI, BIOS or none -------------------------------------------------------------

@pytest.mark.parametrize("machine", ["dev-vm-xeon-kvm", "dev-vm-xeon-amx"])
def test_direct_kernel_boot_is_not_called_bios(machine):
    s = survey_of(machine)
    fw = s["firmware"]
    assert (fw["kind"], fw["uefi"], fw["smbios"], fw["boot_loader"]) == ("direct", False, False, None)
    assert fw["boot_mode"] == "direct kernel boot (no firmware)"
    a = research.boot_answer(s)
    assert a.answer.startswith("No firmware: the hypervisor started the kernel directly")
    assert a.facts["bootloader"] is None and a.facts["firmware"] == "direct" and "GRUB" not in a.answer
    assert research.system_table(s).loc["firmware", "value"] == "direct kernel boot (no firmware)"


@pytest.mark.parametrize("outputs,kind,loader", [
    ({"efi": "/sys/firmware/efi\n", "firmware": "acpi\ndmi\nefi\nmemmap\n",
      "cmdline": "initrd=\\initrd.img root=UUID=1 rw"}, "uefi", "systemd-boot or the EFI stub (initrd=)"),
    ({"firmware": "acpi\ndmi\nmemmap\n", "cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.1.0 root=UUID=1 ro quiet"},
     "bios", "GRUB or syslinux (BOOT_IMAGE=)"),
    # QEMU -kernel: SeaBIOS ran (SMBIOS present) but no boot loader chose the kernel
    ({"firmware": "acpi\ndmi\nmemmap\n", "cmdline": "console=ttyS0 root=/dev/vda"}, "bios", None),
    # "--" ends the kernel's words: a BOOT_IMAGE= after it is init's argument
    ({"firmware": "acpi\nmemmap\n", "cmdline": "console=ttyS0 -- BOOT_IMAGE=x"}, "direct", None),
    ({}, "unknown", None),
])
def test_firmware_kinds(outputs, kind, loader):
    fw = firmware.parse(outputs)
    assert (fw["kind"], fw["boot_loader"]) == (kind, loader)
    assert research.boot_answer({"firmware": fw}).facts["firmware"] == kind


def test_boot_answer_of_a_record_made_before_direct_boot_was_known():
    assert research.boot_answer({"firmware": {"uefi": False, "boot_mode": "BIOS (legacy)"}}).facts["bootloader"] == "grub"
    assert research.boot_answer({"firmware": {"uefi": True}}).facts["bootloader"] == "systemd-boot"


# ---- NUMA node memory against the total ---------------------------------------------------------

@pytest.mark.parametrize("machine", ["dev-vm-xeon-kvm", "dev-vm-xeon-amx"])
def test_numa_memory_that_misses_the_total_is_flagged(machine):
    s = survey_of(machine)
    chk = s["numa"]["memory"]
    node_kb = int((FIX / "facts" / machine / "node_meminfo.txt").read_text().split()[-2])
    total_kb = int(next(l.split()[1] for l in (FIX / "facts" / machine / "meminfo.txt").read_text().splitlines()
                        if l.startswith("MemTotal:")))
    assert (chk["sum_bytes"], chk["total_bytes"]) == (node_kb * 1024, total_kb * 1024)
    assert chk["agrees"] is False and "NUMA node(s) hold" in chk["sentence"]
    assert research.system_table(s).loc["NUMA memory check", "value"].startswith("MISMATCH: the 1 NUMA node(s) hold")


def test_numa_memory_that_adds_up_agrees():
    total = 64 * 1024**3
    nodes = [{"node": 0, "mem_total_bytes": total // 2}, {"node": 1, "mem_total_bytes": total // 2 - 4096}]
    assert numa.memory_check(nodes, total)["agrees"] is True
    assert numa.memory_check(nodes, total + 2 * 1024**3)["agrees"] is False
    assert numa.memory_check([{"node": 0, "mem_total_bytes": None}], total)["agrees"] is None


def test_numa_from_lscpu_is_not_checked():
    s = survey_of("gcp-c3-sapphire-rapids-kvm")
    assert s["numa"]["count"] == 4 and s["numa"]["memory"]["agrees"] is None
    assert research.system_table(s).loc["NUMA memory check", "value"].startswith("not checked")


def test_a_recorded_survey_without_the_new_fields_still_renders():
    """Records made before these checks: the tables and answers recompute what they need."""
    s = copy.deepcopy(survey_of("dev-vm-xeon-amx"))
    s["cpu"].pop("generation_check")
    s["numa"].pop("memory")
    s["firmware"] = {"uefi": False, "boot_mode": "BIOS (legacy)", "uefi_bits": None, "firmware_dirs": []}
    assert not research.cpu_generation(s).facts["check"]["agrees"]
    assert research.system_table(s).loc["NUMA memory check", "value"].startswith("not checked")
    assert len(research.answer_all(s).table()) == 6
