"""Phase 1 answers, computed from surveys parsed out of captured real output (tests/fixtures/facts/)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from aios_lib.facts import research
from aios_lib.facts.survey import FACTS, load_fixture, parse_outputs

FIX = Path(__file__).resolve().parent / "fixtures" / "facts"
GIB = 1024**3


def survey_of(machine: str) -> dict:
    return parse_outputs({name: load_fixture(FIX / machine, fact) for name, fact in FACTS.items()})


@pytest.fixture(scope="module")
def vm():
    return survey_of("dev-vm-xeon-kvm")


def _shown(cell, value) -> bool:
    """A table cell shows ``value`` (pandas shows a missing value as NaN)."""
    import pandas as pd

    return bool(pd.isna(cell)) if value is None else cell == value


@pytest.mark.parametrize("machine", sorted(p.name for p in FIX.iterdir() if p.is_dir()))
def test_answers_for_every_machine(machine):
    s = survey_of(machine)
    answers = research.answer_all(s)
    assert [a.facts["key"] for a in answers] == ["cpu_generation", "isa", "threads", "memory", "boot", "target_disk"]
    assert len(answers.table()) == 6
    assert json.loads(json.dumps(answers.to_dict()))["boot"]["question"].startswith("UEFI")
    assert "**Which CPU generation?**" in answers._repr_markdown_()
    cpu = research.cpu_table(s)
    assert _shown(cpu.loc["logical CPUs", "value"], s["cpu"]["logical_cpus"])
    assert _shown(cpu.loc["model name", "value"], s["cpu"].get("model_name"))
    assert _shown(research.system_table(s).loc["firmware", "value"], s["firmware"]["boot_mode"])
    disks = research.disks_table(s)
    assert list(disks["path"]) == [d["path"] for d in s["disks"].get("disks", [])]
    vulns = research.vulnerabilities_table(s)
    assert list(vulns["vulnerability"]) == list(s["kernel"].get("vulnerabilities") or {})


def test_survey_tables_of_the_dev_vm(vm):
    """The machine whose fixture has disks and vulnerabilities: the tables above are not all empty."""
    disks = research.disks_table(vm).set_index("path")
    assert len(disks) == len(vm["disks"]["disks"]) >= 1
    root = next(d for d in vm["disks"]["disks"] if d.get("holds_root"))
    assert bool(disks.loc[root["path"], "holds /"]) is True
    vulns = research.vulnerabilities_table(vm).set_index("vulnerability")
    assert len(vulns) == len(vm["kernel"]["vulnerabilities"]) >= 1
    for name, text in vm["kernel"]["vulnerabilities"].items():
        assert vulns.loc[name, "kernel says"] == text and vulns.loc[name, "status"]


def test_generation_and_isa_answers(vm):
    assert research.cpu_generation(vm).facts["generation"] == "Emerald Rapids"
    isa = research.isa_support(vm)
    assert isa.facts["avx2_fma_f16c"] and "avx512f" in isa.facts["avx512"] and isa.facts["amx"] == []
    assert "AVX-512 is present" in isa.detail and "GGML_NATIVE=ON" in isa.detail
    desk = research.isa_support(survey_of("i7-12700kf-desktop-hybrid"))
    assert desk.facts["avx512"] == [] and desk.facts["avx_vnni"]
    assert "No AVX-512" in desk.detail and "AVX-VNNI" in desk.detail


def test_threads_start_at_physical_cores():
    t = research.thread_start(survey_of("i7-12700kf-desktop-hybrid"))
    assert t.facts["start"] == 12 and t.facts["candidates"] == [6, 8, 12, 20]
    assert "8 P + 4 E" in t.answer
    ml = research.thread_start(survey_of("ultra9-185h-meteor-lake-hybrid"))
    assert ml.facts["start"] == 16 and ml.facts["candidates"] == [6, 8, 16, 22]
    epyc = research.thread_start(survey_of("epyc-7451-zen1"))
    assert epyc.facts["start"] == 48 and epyc.facts["candidates"] == [24, 48, 96]
    assert research.thread_start(survey_of("dev-vm-xeon-kvm")).facts["candidates"] == [1, 2]


@pytest.mark.parametrize("ram_gib", [8, 16, 32, 64])
def test_model_fit_arithmetic(vm, ram_gib):
    s = copy.deepcopy(vm)
    s["memory"]["total_bytes"] = ram_gib * GIB
    fit = research.model_fit(s)
    budget = ram_gib * GIB - int(research.OS_RESERVE_GIB * GIB) - int(research.KV_RESERVE_GIB * GIB)
    assert fit.budget_bytes == budget
    for row in fit.rows:
        params_b = budget * 8 / research.BITS_PER_WEIGHT[row["quant"]] / 1e9
        assert row["max_params_b"] == round(params_b, 1)
        cls = max(x for x in research.COMMON_SIZES_B if x <= params_b)
        assert row["size_class"] == f"about {cls:g}B"
    q4, q5 = fit.rows
    assert q4["max_params_b"] > q5["max_params_b"]  # more bits per weight, fewer parameters


def test_model_fit_named_sizes(vm):
    s = copy.deepcopy(vm)
    s["memory"]["total_bytes"] = 32 * GIB  # the blueprint's 32 GB target
    q4, q5 = research.model_fit(s).rows
    assert (q4["size_class"], q5["size_class"]) == ("about 34B", "about 34B")
    s["memory"]["total_bytes"] = 16 * GIB
    q4, q5 = research.model_fit(s).rows
    assert (q4["size_class"], q5["size_class"]) == ("about 22B", "about 14B")
    # reserves are parameters: a larger KV reserve shrinks the budget
    assert research.model_fit(s, kv_reserve_gib=4).budget_bytes == 16 * GIB - 6 * GIB


def test_memory_answer_on_this_vm(vm):
    a = research.memory_answer(vm)
    assert a.facts["total_bytes"] == vm["memory"]["total_bytes"]
    assert "Q4_K_M" in a.answer and "Q5_K_M" in a.answer and "memory speed is unknown" in a.detail


def test_boot_loader_follows_firmware(vm):
    # the dev VM runs no firmware at all (direct kernel boot): no boot loader to name
    assert research.boot_answer(vm).facts["bootloader"] is None
    s = copy.deepcopy(vm)
    s["firmware"].update(kind="bios", uefi=False)
    assert research.boot_answer(s).facts["bootloader"] == "grub"
    s["firmware"].update(kind="uefi", uefi=True)
    assert research.boot_answer(s).facts["bootloader"] == "systemd-boot"


def test_no_disk_is_safe_on_this_vm(vm):
    a = research.install_target(vm)
    assert a.facts["suggestion"] is None and "none is safe" in a.answer
    assert "holds the running root" in a.facts["excluded"]["/dev/vda"]
    assert "virtual device" in a.facts["excluded"]["/dev/zram0"]


def test_largest_free_internal_disk_is_suggested(vm):
    s = copy.deepcopy(vm)
    base = next(d for d in s["disks"]["disks"] if d["name"] == "vda")
    s["disks"]["disks"] += [
        dict(base, name="nvme0n1", path="/dev/nvme0n1", size_bytes=512 * GIB, holds_root=False, mountpoints=[],
             rotational=False, transport="nvme"),
        dict(base, name="nvme1n1", path="/dev/nvme1n1", size_bytes=1024 * GIB, holds_root=False,
             mountpoints=["/data"]),
        dict(base, name="sdb", path="/dev/sdb", size_bytes=2048 * GIB, holds_root=False, mountpoints=[],
             removable=True, transport="usb"),
    ]
    a = research.install_target(s)
    assert a.facts["suggestion"] == "/dev/nvme0n1" and "nothing is written" in a.answer
    assert a.facts["excluded"]["/dev/sdb"] == "removable"
    assert a.facts["excluded"]["/dev/nvme1n1"] == "mounted at /data"


def test_recorded_summary_has_what_later_phases_read(vm):
    r = research.recorded_summary(vm)
    assert (r["physical_cores"], r["logical_cpus"], r["avx2"], r["uefi"]) == (2, 2, True, False)
    assert r["mem_total_bytes"] == vm["memory"]["total_bytes"]


def test_summary_table_shows_memory_in_gib_beside_the_recorded_bytes(vm):
    shown = research.summary_table(vm)["recorded as 01/summary"]
    n = vm["memory"]["total_bytes"]
    assert shown["mem_total_bytes"] == f"{n / research.GIB:.1f} GiB ({n:,} bytes)"
    assert shown["physical_cores"] == 2


def test_notebook_01_records_survey_and_answers(tmp_path):
    """Notebook 01 runs headless in plan mode, renders HTML and records what later phases read."""
    import os

    from aios_lib.execute import run_phases
    from aios_lib.facts import cpu as cpu_fact
    from aios_lib.facts.base import gather
    from aios_lib.core.journal import Journal
    from aios_lib.core.runner import Runner

    root = Path(__file__).resolve().parent.parent
    old = os.environ.get("AIOS_OUTPUTS")
    os.environ["AIOS_OUTPUTS"] = str(tmp_path)
    try:
        outcome = run_phases(root / "parameters" / "default.yaml", ["01"], plan=True, log_output=False)
    finally:
        if old is not None:
            os.environ["AIOS_OUTPUTS"] = old
    d = next(tmp_path.glob("*/*-plan"))
    assert (d / "01_research_prep.html").exists(), outcome
    results = json.loads((d / "results.json").read_text())["01"]
    live = gather(Runner(journal=Journal(None)), cpu_fact.FACT)
    assert results["survey"]["cpu"]["physical_cores"] == live["physical_cores"]
    assert results["summary"]["logical_cpus"] == live["logical_cpus"]
    assert set(results["answers"]) == {"cpu_generation", "isa", "threads", "memory", "boot", "target_disk"}
    assert results["answers"]["threads"]["facts"]["start"] == live["physical_cores"]
    html = (d / "01_research_prep.html").read_text()
    assert "Which CPU generation?" in html and "largest GGUF" in html
