"""Build verification on real llama.cpp builds of the pinned source, on the real SmolLM2 model.

On a machine whose CPU advertises AMX the native build of this source crashes (llama.cpp's AMX
kernel): the working build is then the patched one or the one without AMX. Everywhere, a build
forced to use an extension this CPU cannot run must be caught and replaced by one that works; on a
CPU that runs every extension we can force, a build made to crash another way is caught instead.
"""
import json
import shutil
import subprocess

import pytest

from aios_lib.runtime import llama, verify
from aios_lib.facts import FACTS, gather

from conftest import FIXTURES

#: extensions a build can be forced to use, with gcc flags and a C snippet that executes one of
#: its instructions (so the test knows the CPU faults on it, whatever CPUID says)
FORCEABLE = {
    "AVX-512": {"flags": "-mavx512f",
                "options": {"GGML_NATIVE": "OFF", "GGML_AVX": "ON", "GGML_AVX2": "ON", "GGML_FMA": "ON",
                            "GGML_F16C": "ON", "GGML_AVX512": "ON"},
                "snippet": "#include <immintrin.h>\nint main(){volatile float f=1;__m512 a=_mm512_set1_ps(f);"
                           "a=_mm512_add_ps(a,a);return (int)_mm512_reduce_add_ps(a)==32?0:1;}\n"},
    "FMA4": {"flags": "-mfma4",
             "options": {**llama.GENERIC_OPTIONS},
             "snippet": "#include <x86intrin.h>\nint main(){volatile float f=1.5f;__m128 x=_mm_set1_ps(f);"
                        "x=_mm_macc_ps(x,x,x);float o[4];_mm_storeu_ps(o,x);return o[0]>0?0:1;}\n"},
}


def _cpu_faults_on(ext: str, tmp_path) -> bool:
    """Compile and run the extension's snippet: True when this CPU raises SIGILL on it."""
    src, exe = tmp_path / f"{ext}.c", tmp_path / f"{ext}.bin"
    src.write_text(FORCEABLE[ext]["snippet"])
    subprocess.run(["cc", "-O1", FORCEABLE[ext]["flags"], "-o", str(exe), str(src)], check=True)
    return subprocess.run([str(exe)]).returncode == -4


@pytest.mark.slow
def test_the_build_everything_uses_is_verified(llama_working):
    w = llama_working
    assert w.verification.ok and not w.planned
    names = [c.name for c in w.verification.checks if c.skipped is None]
    assert names == ["llama-bench (prompt + generation)", "llama-server (one completion)",
                     "test-quantize-fns (CPU kernels vs reference)"]
    server = w.verification.checks[1]
    assert "paris" in server.detail.lower()  # the real model answered the real question
    assert "types" in w.verification.checks[2].detail
    rec = json.loads(json.dumps(w.to_dict()))
    assert rec["verification"]["ok"] is True and rec["attempts"][0]["why"] == "the build as configured"


@pytest.mark.slow
def test_amx_crash_is_diagnosed_and_a_working_build_found(llama_working, runner):
    """On every machine the build everything uses passed verification. Where the native build runs
    as built (a CPU without AMX, or AMX that works), it is that build and nothing was repaired. Where
    it dies in llama.cpp's AMX kernel (a CPU that advertises AMX, with the kernel's permission): the
    record names the signal, function, instruction and extension, and the build used is the patched
    one (AMX measured as helping) or the one without AMX."""
    x = gather(runner, FACTS["xstate"])
    w = llama_working
    assert w.verification.ok, w.reason
    first = verify.Verification.from_dict(w.attempts[0].verification)
    if first.ok:
        assert len(w.attempts) == 1 and w.build.label == "native" and not w.amx
        assert w.reason.startswith("verified as configured")
        if not x.get("amx_cpuid"):  # -march=native follows CPUID: no AMX advertised, none compiled in
            assert "AMX_INT8" not in w.build.features
        return
    ext = first.crash.extension if first.crash else None
    if ext != "AMX":  # another extension, or none identified: the same fallback (the forced-extension test)
        assert w.build.label.startswith("native-no-") and (ext is None or ext in w.reason), w.reason
        return
    assert x.get("amx_cpuid"), "an AMX crash on a CPU that does not advertise AMX"
    assert first.crash.signal in ("SIGILL", "SIGSEGV") and first.crash.extension == "AMX"
    assert "amx" in (first.crash.function or "").lower() and first.crash.frames
    labels = [a.build["label"] for a in w.attempts]
    assert labels[1] == "native-amx-tile-config" and "native-no-amx" in labels
    assert w.amx and set(w.amx["ratios"]) == {"pp128", "tg32"}
    for r in w.amx["ratios"].values():
        assert r["rounds"] >= 2 and r["ci_low"] <= r["ratio"] <= r["ci_high"]
    if w.amx["keep"]:
        assert w.build.label == "native-amx-tile-config" and "AMX_INT8" in w.build.features
        assert w.build.patches[0]["sha256"] == llama.patch_info("amx-tile-config")["sha256"]
    else:
        assert w.build.label == "native-no-amx" and "AMX_INT8" not in w.build.features


@pytest.mark.slow
def test_forced_extension_is_caught_and_switched_off(make_run, smollm2, tmp_path):
    """A llama-bench build forced to use an extension this CPU cannot run dies with SIGILL; the
    diagnosis names the extension and the fallback builds one that passes."""
    assert shutil.which("gdb"), "gdb is missing: scripts/setup.sh installs it (make setup)"
    ext = next((e for e in FORCEABLE if _cpu_faults_on(e, tmp_path)), None)
    run = make_run({"runtime": {"llama": {"max_fallback_builds": 2}}})
    if ext is None:
        pytest.skip("this CPU runs every extension the test can force (AVX-512, FMA4): "
                    "test_a_build_that_crashes_another_way_is_caught covers the verification here")
    f = FORCEABLE[ext]
    opts = {**f["options"], "CMAKE_C_FLAGS": f["flags"], "CMAKE_CXX_FLAGS": f["flags"]}
    w = verify.working_build(run, smollm2.path, label=f"forced-{ext.lower()}", native=False, cmake_options=opts,
                             targets=["llama-bench"])
    first = verify.Verification.from_dict(w.attempts[0].verification)
    assert not first.ok and first.crash.signal == "SIGILL" and first.crash.extension == ext
    assert first.crash.instruction and first.crash.identified_by.startswith("the faulting instruction")
    assert w.verification.ok and w.build.label == f"forced-{ext.lower()}-no-{ext.lower()}"
    for flag in verify.WITHOUT[ext]["flags"]:
        assert flag in w.build.cmake_options["CMAKE_CXX_FLAGS"]
    assert "verified" in w._repr_markdown_() and ext in w.reason




@pytest.mark.slow
def test_a_build_that_crashes_another_way_is_caught(make_run, smollm2, llama_working):
    """The build everything uses, patched to write through a null pointer in the CPU backend's
    embedding lookup (get_rows, which every model runs): the verification names SIGSEGV and the
    function, identifies no ISA extension, and with find_working_build off the run stops with that
    diagnosis instead of using the build.
    (Only ops.cpp differs from the working build, so ccache makes this build short.)"""
    assert shutil.which("gdb"), "gdb is missing: scripts/setup.sh installs it (make setup)"
    run = make_run({"runtime": {"llama": {"find_working_build": False}}})
    base = llama_working.build
    kw = dict(label="crash-injected", native=base.cmake_options.get("GGML_NATIVE") == "ON",
              cmake_options=dict(base.cmake_options), targets=["llama-bench"],
              patches=[p["name"] for p in base.patches] + [str(FIXTURES / "llama" / "crash-in-get-rows.patch")])
    b = llama.build(run, **kw)
    assert b.patches[-1]["name"] == "crash-in-get-rows"
    v = verify.verify(run, b, smollm2.path)
    assert not v.ok and v.checks[0].signal == "SIGSEGV" and "SIGSEGV" in v.checks[0].detail
    assert v.crash.function == "ggml_compute_forward_get_rows" and v.crash.extension is None
    assert v.crash.identified_by == "not identified"
    # the kernel test calls the dot products directly, not the graph: it passes,
    # which is why the verification runs the real model first
    assert v.checks[1].skipped and v.checks[2].ok is True
    with pytest.raises(verify.NoWorkingBuild, match="SIGSEGV.*find_working_build is false"):
        verify.working_build(run, smollm2.path, **kw)
