"""The stock build's CPU modules: ggml's variant table, its score function run on this CPU, and the
build-time options that need a pinned CMake patch (variants only, CPU-backend-only flags)."""
from pathlib import Path

import pytest

from aios_lib.facts import llama as llama_facts
from aios_lib.runtime import cpu_variants, llama, verify

FIXTURES = Path(__file__).parent / "fixtures" / "llama"


def test_the_variant_table_of_the_pinned_tree():
    table = dict(llama_facts.parse_cpu_variants((FIXTURES / "tree-ggml-src-CMakeLists.txt").read_text()))
    assert len(table) == 14 and list(table)[0] == "x64" and table["x64"] == []
    assert table["haswell"] == ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"]
    assert table["sapphirerapids"][-2:] == ["AMX_TILE", "AMX_INT8"]
    assert not any(n.startswith("armv") for n in table)  # the ARM block is not read as x86
    assert llama_facts.parse_cpu_variants("project(x)\n") == []


def test_scores_parse_and_the_best_module_is_the_highest_that_runs():
    s = cpu_variants.parse_scores("x64 1\nhaswell 63\nsapphirerapids 0\nnoise line here\nzen4 2030\n")
    assert s == {"x64": 1, "haswell": 63, "sapphirerapids": 0, "zen4": 2030}
    assert cpu_variants.best(s) == "zen4"
    assert cpu_variants.best({"sapphirerapids": 0, "x64": 1}) == "x64"
    assert cpu_variants.best({"haswell": 0}) is None


def test_without_an_extension_the_flags_go_to_the_cpu_backend_only_where_that_is_safe():
    native = {"GGML_NATIVE": "ON", "CMAKE_BUILD_TYPE": "Release"}
    o = verify.without_options(native, ["AMX"], scoped=True)
    assert o == {"GGML_CPU_EXTRA_FLAGS": "-mno-amx-tile;-mno-amx-int8;-mno-amx-bf16"}
    o2 = verify.without_options({**native, **o}, ["AVX-512"], scoped=True)  # added to, not replaced
    assert o2["GGML_CPU_EXTRA_FLAGS"].split(";") == ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16", "-mno-avx512f"]
    # a build forcing an extension through global flags gets the -mno flags globally too
    forced = {**native, "CMAKE_C_FLAGS": "-mfma4", "CMAKE_CXX_FLAGS": "-mfma4"}
    g = verify.without_options(forced, ["FMA4"], scoped=True)
    assert g["CMAKE_C_FLAGS"] == "-mfma4 -mno-fma4" and "GGML_CPU_EXTRA_FLAGS" not in g
    # another source (git): the patch that adds the option may not apply, so the flags are global
    assert "CMAKE_CXX_FLAGS" in verify.without_options(native, ["AMX"], scoped=False)


def test_an_option_that_needs_a_patch_brings_it_into_the_build_and_its_key(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    plain = llama.build(run, targets=["llama-bench"])
    scoped = llama.build(run, label="native-no-amx", targets=["llama-bench"],
                         cmake_options={"GGML_CPU_EXTRA_FLAGS": "-mno-amx-int8"})
    assert [p["name"] for p in scoped.patches] == ["cpu-extra-flags"] and scoped.key != plain.key
    assert "CPU backend only" in scoped.patches[0]["why"]
    # named explicitly as well: applied once
    again = llama.build(run, label="x", targets=["llama-bench"], patches=["cpu-extra-flags"],
                        cmake_options={"GGML_CPU_EXTRA_FLAGS": "-mno-amx-int8"})
    assert [p["name"] for p in again.patches] == ["cpu-extra-flags"]


def test_planned_stock_build_names_the_modules_it_will_build(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    rel = llama.build_release(make_run(plan=True))
    assert rel.cmake_options["GGML_CPU_VARIANTS_ONLY"] == f"{cpu_variants.PLANNED_BEST};haswell"
    assert [p["name"] for p in rel.patches] == ["cpu-variants-only"]
    every = llama.build_release(make_run({"runtime": {"llama": {"stock_variants": "all"}}}, plan=True))
    assert "GGML_CPU_VARIANTS_ONLY" not in every.cmake_options and every.patches == []


@pytest.mark.parametrize("name", ["cpu-extra-flags", "cpu-variants-only", "amx-tile-config"])
def test_every_pinned_patch_applies_to_the_pinned_tree(name, make_run, tmp_path):
    """Real: the pinned source (fetched as phase 04 does, cached) takes each patch cleanly."""
    import subprocess

    src = llama.fetch_source(make_run())
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-al", str(src), str(tree)], check=True)
    r = subprocess.run(["patch", "-p1", "--dry-run", "-i", llama.patch_info(name)["file"]], cwd=tree,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_scores_on_this_cpu_agree_with_what_the_kernel_says_it_has(make_run):
    """Real: ggml's score function, compiled per variant from the pinned tree and run on this CPU,
    against /proc/cpuinfo's flags (a second reading of CPUID, through the kernel)."""
    run = make_run()
    src = llama.fetch_source(run)
    names, scores = cpu_variants.stock_variants(run, src, llama.compiler_version(run),
                                                llama.source_identity(run.params.runtime.llama.source))
    assert len(scores) == 14 and scores["x64"] == 1  # the baseline module runs everywhere
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
    v3 = {"avx2", "fma", "f16c", "bmi2", "avx", "sse4_2"} <= flags
    assert (scores["haswell"] > 0) == v3
    assert (scores["skylakex"] > 0) == ({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"} <= flags and v3)
    top = cpu_variants.best(scores)
    assert names[0] == top and names[-1] == "haswell" and scores[top] == max(scores.values())
    if {"amx_int8", "amx_tile"} <= flags and scores["sapphirerapids"] > 0:
        assert top == "sapphirerapids"
    # once the probes are compiled, plan mode scores too (a read-only probe): the plan names the same build
    plan = make_run(plan=True)
    assert cpu_variants.stock_variants(plan, src, llama.compiler_version(plan),
                                       llama.source_identity(plan.params.runtime.llama.source))[0] == names
