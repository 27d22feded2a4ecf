"""Phase 4 llama.cpp: sources, the real native and generic builds (cached), plan mode."""
import re
import time

import pytest

from aios_lib.facts import llama as llama_facts
from aios_lib.runtime import llama


def test_build_key_changes_with_inputs():
    src = {"provider": "pypi-sdist", "version": "0.3.36", "sha256": "x"}
    opts = {"GGML_NATIVE": "ON"}
    k = llama.build_key(src, opts, "gcc 12", ["llama-bench"])
    assert k == llama.build_key(src, dict(opts), "gcc 12", ["llama-bench"])
    assert k != llama.build_key(src, {"GGML_NATIVE": "OFF"}, "gcc 12", ["llama-bench"])
    assert k != llama.build_key(src, opts, "gcc 13", ["llama-bench"])
    assert k != llama.build_key({**src, "version": "0.3.37"}, opts, "gcc 12", ["llama-bench"])
    assert k != llama.build_key(src, opts, "gcc 12", ["llama-bench", "llama-server"])


def test_parse_features_and_cmake_cache():
    line = ("system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | "
            "AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | LLAMAFILE = 0 | OPENMP = 1 | REPACK = 1 |")
    feats = llama_facts.parse_features(line)
    assert feats[:2] == ["SSE3", "SSSE3"] and "AVX2" in feats and "OPENMP" in feats and "LLAMAFILE" not in feats
    cache = llama_facts.parse_cmake_cache("// comment\nGGML_NATIVE:BOOL=ON\nCMAKE_BUILD_TYPE:STRING=Release\n")
    assert cache == {"GGML_NATIVE": "ON", "CMAKE_BUILD_TYPE": "Release"}


def test_options_native_generic_and_explicit(make_run):
    run = make_run()
    native = llama.cmake_options_for(run)
    assert native["GGML_NATIVE"] == "ON" and native["LLAMA_USE_PREBUILT_UI"] == "OFF"
    assert native["LLAMA_BUILD_TESTS"] == "ON" and native["CMAKE_BUILD_TYPE"] == "Release"
    generic = llama.cmake_options_for(run, native=False)
    assert generic["GGML_NATIVE"] == "OFF" and generic["GGML_AVX2"] == "OFF" and generic["GGML_FMA"] == "OFF"
    run2 = make_run({"runtime": {"llama": {"native": False,
                                           "cmake_options": {"GGML_AVX2": "ON", "GGML_FMA": "ON"}}}})
    explicit = llama.cmake_options_for(run2)
    assert explicit["GGML_NATIVE"] == "OFF" and explicit["GGML_AVX2"] == "ON"
    assert "GGML_AVX512" not in explicit  # explicit ISA choice: no blanket generic list


def test_plan_mode_builds_nothing(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    b = llama.build(run)
    assert b.planned and not b.cached and b.seconds is None
    work = [r for r in run.runner.history if r.kind != "probe"]
    assert work and all(r.planned and r.rc is None for r in work)
    lines = [r.cmdline for r in work]
    assert any("pip download" in ln and "llama-cpp-python==0.3.36" in ln for ln in lines)
    cfg = next(ln for ln in lines if ln.startswith("cmake -S"))
    assert "-G Ninja" in cfg and "-DGGML_NATIVE=ON" in cfg and "-DLLAMA_USE_PREBUILT_UI=OFF" in cfg
    bld = next(r for r in work if r.argv[:2] == ["cmake", "--build"])
    assert bld.argv[-4:] == ["llama-bench", "llama-server", "llama-quantize", "test-quantize-fns"]
    assert not list((tmp_path / "cache").rglob("llama-bench"))


def test_git_provider_is_pinned_and_planned(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run({"runtime": {"llama": {"source": {"provider": "git", "ref": "b6500"}}}}, plan=True)
    b = llama.build(run, label="generic", native=False, targets=["llama-bench"])
    assert b.planned and b.source == {"provider": "git", "url": "https://github.com/ggml-org/llama.cpp", "ref": "b6500"}
    lines = [r.cmdline for r in run.runner.history if r.planned]
    assert lines[0].startswith("rm -rf") and lines[1].startswith("git clone") and "checkout --detach b6500" in lines[2]


def test_verification_targets_and_the_release_layout(make_run, tmp_path, monkeypatch):
    assert llama.build_targets(["llama-server"]) == ["llama-server", "test-quantize-fns"]
    assert llama.build_targets(["test-quantize-fns", "llama-bench"]) == ["test-quantize-fns", "llama-bench"]
    # a GGML_BACKEND_DL build cannot link llama.cpp's kernel tests
    assert llama.build_targets(["llama-bench"], llama.RELEASE_OPTIONS) == ["llama-bench"]
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))  # nothing cached: the build is planned
    run = make_run(plan=True)
    rel = llama.build_release(run)
    assert rel.planned and rel.cmake_options["GGML_BACKEND_DL"] == "ON" and rel.targets == ["llama-bench", "llama-server"]
    assert "GGML_AVX2" not in rel.cmake_options  # runtime dispatch, not the SSE2 floor


def test_a_patch_goes_into_the_key_and_is_applied_to_the_build_tree_only(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    plain = llama.build(run, targets=["llama-bench"])
    patched = llama.build(run, targets=["llama-bench"], patches=["amx-tile-config"])
    assert patched.key != plain.key and patched.patches[0]["name"] == "amx-tile-config"
    assert patched.patches[0]["sha256"] == llama.patch_info("amx-tile-config")["sha256"]
    cmds = [r.argv for r in run.runner.history if r.planned]
    applied = [a for a in cmds if a[:2] == ["patch", "-p1"]]
    assert [a[2] for a in applied] == ["--dry-run", "-i"]  # checked, then applied
    tree = next(a for a in cmds if a[:2] == ["cp", "-al"])
    assert tree[2] == str(llama.source_dir(run)) and tree[3].endswith("/src")  # hard links, not the shared tree
    with pytest.raises(ValueError, match="no llama.cpp patch named 'nope'"):
        llama.build(run, patches=["nope"])


@pytest.mark.slow
def test_native_build_is_real(llama_native, make_run):
    b = llama_native
    for t in ("llama-bench", "llama-server", "llama-quantize"):
        assert b.binary(t).exists()
    assert list(b.bin_dir.glob("libggml*.so*")) and list(b.bin_dir.glob("libllama*.so*"))
    assert b.native_in_effect is True and b.cmake_options["GGML_NATIVE"] == "ON"
    assert b.march == "-march=native"
    assert "AVX2" in b.features and "FMA" in b.features  # what the binary itself reports
    assert b.version.startswith("version:")
    assert b.source["sha256_verified"] == b.source["sha256"]
    # the recorded compiler is this machine's, named with its version, and it is the one in the key
    assert b.compiler == llama.compiler_version(make_run(plan=True))
    assert re.match(r"^(c\+\+|g\+\+|gcc|clang)[\s(].*\d+\.\d+", b.compiler), b.compiler
    assert b.key == llama.build_key(b.source, b.cmake_options, b.compiler, b.targets, [p["sha256"] for p in b.patches])
    assert b.cached or b.seconds > 30
    assert b.built_seconds > 30  # how long the build took is kept in the cache record


@pytest.mark.slow
def test_bench_binary_reports_version(llama_build, runner):
    res = runner.probe([str(llama_build.binary("llama-bench")), "--version"], check=False)
    text = res.stdout + res.stderr
    assert res.rc == 0 and "version:" in text and "built with" in text


@pytest.mark.slow
def test_second_build_comes_from_cache(llama_native, make_run):
    run = make_run()
    t0 = time.time()
    again = llama.build(run)
    assert again.cached and again.seconds is None and again.key == llama_native.key
    assert time.time() - t0 < 20
    assert not [r for r in run.runner.history if r.kind == "work"]  # no cmake, no pip
    assert again.features == llama_native.features


def test_generic_build_turns_every_optional_extension_off(make_run, tmp_path, monkeypatch):
    """The SSE2 floor (runtime.llama.compare_generic, off by default): the same build code as every
    other build, with every optional x86 extension switched off (planned here: no real stock build
    ships it, so the test suite does not spend a build on it)."""
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    assert make_run().params.runtime.llama.compare_generic is False
    run = make_run(plan=True)
    g = llama.build_generic(run)
    assert g.planned and g.label == "generic" and g.targets == ["llama-bench", "test-quantize-fns"]
    assert g.cmake_options["GGML_NATIVE"] == "OFF"
    assert all(g.cmake_options[k] == "OFF" for k in llama.GENERIC_OPTIONS)
    cfg = next(r.argv for r in run.runner.history if r.argv[:2] == ["cmake", "-S"])
    assert "-DGGML_AVX2=OFF" in cfg and "-DGGML_AVX512=OFF" in cfg and "-DGGML_NATIVE=OFF" in cfg


def test_feature_table_side_by_side():
    from pathlib import Path

    a = llama.LlamaBuild(Path("/x"), "native", {}, {}, "gcc", features=["AVX2", "FMA", "OPENMP"])
    b = llama.LlamaBuild(Path("/y"), "generic", {}, {}, "gcc", features=["OPENMP"])
    t = llama.feature_table(a, b, None)
    assert list(t.columns) == ["feature", "native", "generic"]
    assert t.set_index("feature").loc["AVX2"].tolist() == [True, False]
    assert t.set_index("feature").loc["OPENMP"].tolist() == [True, True]


@pytest.mark.slow
def test_source_date_epoch_turns_native_default_off(llama_native, make_run, tmp_path):
    """The trap the build avoids, shown on the real ggml tree: with SOURCE_DATE_EPOCH set and no
    explicit -DGGML_NATIVE, ggml configures a generic build; without it, a native one."""
    run = make_run()
    src = llama.source_dir(run)
    opts = [f"-D{k}={v}" for k, v in llama.BASE_OPTIONS.items()]  # everything but GGML_NATIVE
    seen = {}
    for label, env in (("epoch", {"SOURCE_DATE_EPOCH": "1700000000"}), ("clean", {})):
        b = tmp_path / label
        run.runner.work(["cmake", "-S", str(src), "-B", str(b), "-G", "Ninja", *opts],
                        env=env, unset_env=[] if env else ["SOURCE_DATE_EPOCH"])
        seen[label] = llama_facts.parse_cmake_cache((b / "CMakeCache.txt").read_text())["GGML_NATIVE"]
    assert seen == {"epoch": "OFF", "clean": "ON"}


@pytest.mark.slow
def test_subset_of_targets_reuses_the_cached_build(llama_native, make_run):
    """llama-server alone with the same options comes from the native build that has it."""
    run = make_run()
    t0 = time.time()
    b = llama.build(run, targets=["llama-server"])
    assert b.cached and b.bin_dir == llama_native.bin_dir and b.binary("llama-server").exists()
    assert time.time() - t0 < 20 and not [r for r in run.runner.history if r.kind == "work"]
