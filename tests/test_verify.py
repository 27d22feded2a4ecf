"""Build verification: signals, the gdb report, the ISA extension of a faulting instruction, and the
options of a build without an extension (pure), on captured real output."""
import math
import random

import pytest

from aios_lib.measure import stats
from aios_lib.runtime import verify
from aios_lib.facts.survey import FACTS, load_fixture

from conftest import FIXTURES


def test_signal_names_from_popen_and_shell_codes():
    assert verify.signal_of(-4) == "SIGILL"
    assert verify.signal_of(132) == "SIGILL"  # 128 + 4, as a shell reports it
    assert verify.signal_of(-11) == "SIGSEGV"
    assert verify.signal_of(139) == "SIGSEGV"
    assert verify.signal_of(0) is None
    assert verify.signal_of(1) is None
    assert verify.signal_of(None) is None
    assert verify.describe_signal("SIGILL") == "SIGILL (illegal instruction)"


def test_gdb_report_of_the_real_amx_crash():
    """Captured on an AMX machine: llama-bench of the pinned source, native build, SmolLM2 Q4_1."""
    g = verify.parse_gdb((FIXTURES / "llama" / "gdb-amx-sigill.txt").read_text())
    assert g["signal"] == "SIGILL"
    assert g["function"] == "tinygemm_kernel_amx<block_q8_1, block_q4_1, float, 32, 0>"
    assert g["library"] == "libggml-cpu.so.0"
    assert g["instruction"] == "tileloadd (%rax,%rsi,1),%tmm0"
    assert g["frames"][1].startswith("#1") and "ggml_backend_amx_mul_mat" in g["frames"][1]
    assert verify.extension_of(g["instruction"], g["function"]) == (
        "AMX", "the faulting instruction `tileloadd (%rax,%rsi,1),%tmm0`")


def test_gdb_report_without_a_crash_names_nothing():
    g = verify.parse_gdb("[Inferior 1 (process 42) exited normally]\nNo stack.\n")
    assert g["signal"] is None and g["frames"] == [] and g["function"] is None and g["instruction"] is None


@pytest.mark.parametrize("instruction,ext", [
    ("tilezero %tmm4", "AMX"),
    ("tdpbssd %tmm2,%tmm1,%tmm0", "AMX"),
    ("ldtilecfg 0xc0(%rsp)", "AMX"),
    ("vpdpbusd %zmm1,%zmm2,%zmm3", "AVX-512"),
    ("vmovdqu64 (%rax),%zmm0", "AVX-512"),
    ("kmovw %k1,%eax", "AVX-512"),
    ("vpaddd %ymm17,%ymm1,%ymm2", "AVX-512"),  # ymm16-31 exist only with AVX-512VL
    ("vdpbf16ps %zmm1,%zmm2,%zmm3", "AVX512-BF16"),
    ("vfmadd231ph %zmm1,%zmm2,%zmm3", "AVX512-FP16"),
    ("vaddph %zmm1,%zmm2,%zmm3", "AVX512-FP16"),
    ("{vex} vpdpbusd %ymm1,%ymm2,%ymm3", "AVX-VNNI"),
    ("vfmadd231ps %ymm1,%ymm2,%ymm3", "FMA"),
    ("vfmaddps %xmm3,%xmm2,%xmm1,%xmm0", "FMA4"),
    ("vcvtph2ps %xmm0,%ymm1", "F16C"),
    ("vpmaddubsw %ymm1,%ymm2,%ymm3", "AVX2"),
])
def test_extension_of_the_faulting_instruction(instruction, ext):
    assert verify.extension_of(instruction)[0] == ext


def test_extension_from_the_function_name_when_no_instruction():
    assert verify.extension_of(None, "ggml_backend_amx_mul_mat")[0] == "AMX"
    assert verify.extension_of("mov %rax,%rbx", "main") == (None, "not identified")


def test_without_options_native_appends_mno_flags_and_keeps_existing_ones():
    native = {"GGML_NATIVE": "ON", "CMAKE_CXX_FLAGS": "-g"}
    o = verify.without_options(native, ["AMX"])
    assert o["CMAKE_CXX_FLAGS"] == "-g -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    assert o["CMAKE_C_FLAGS"] == "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    assert not any(k.startswith("GGML_") for k in o)  # -march=native decides; the GGML_* options are ignored


def test_without_options_non_native_switches_the_ggml_options_off():
    o = verify.without_options({"GGML_NATIVE": "OFF", "GGML_AVX512": "ON"}, ["AVX-512"])
    assert o["GGML_AVX512"] == "OFF" and o["GGML_AMX_INT8"] == "OFF" and "-mno-avx512f" in o["CMAKE_C_FLAGS"]


def test_every_extension_the_diagnosis_can_name_has_a_way_to_build_without_it():
    names = {verify.extension_of(i)[0] for i in ("tilezero %tmm0", "kmovw %k1,%eax", "vdpbf16ps %zmm1,%zmm2,%zmm3",
                                                 "vaddph %zmm1,%zmm2,%zmm3", "{vex} vpdpbusd %ymm1,%ymm2,%ymm3",
                                                 "vfmadd231ps %ymm1,%ymm2,%ymm3", "vfmaddps %xmm3,%xmm2,%xmm1,%xmm0",
                                                 "vcvtph2ps %xmm0,%ymm1", "vpaddd %ymm1,%ymm2,%ymm3")}
    assert names <= set(verify.WITHOUT)
    assert {e for e, _ in verify.FEATURE_OF} <= set(verify.WITHOUT)


def test_verification_record_round_trips_and_says_what_failed():
    v = verify.Verification("native", "k1", "/m.gguf", [
        verify.Check("llama-bench (prompt + generation)", "llama-bench ...", False, -4, "SIGILL", 0.5,
                     "died: SIGILL (illegal instruction)"),
        verify.Check("llama-server (one completion)", "", None, skipped="not built in this build"),
        verify.Check("test-quantize-fns (CPU kernels vs reference)", "t", True, 0, None, 8.0, "41 types"),
    ], verify.Crash("SIGILL", "tinygemm_kernel_amx<...>", "libggml-cpu.so.0", "tilezero %tmm4", "AMX",
                    "the faulting instruction `tilezero %tmm4`"))
    assert not v.ok and [c.name for c in v.failed()] == ["llama-bench (prompt + generation)"]
    again = verify.Verification.from_dict(v.to_dict())
    assert again.to_dict() == v.to_dict() and again.crash.extension == "AMX"
    assert "SIGILL (illegal instruction) in `tinygemm_kernel_amx<...>`" in v.crash.sentence()
    assert list(v.table()["result"]) == ["FAILED", "skipped", "ok"]


def test_xstate_fact_of_the_amx_machine():
    x = FACTS["xstate"].parse(load_fixture(FIXTURES / "facts" / "dev-vm-xeon-amx", FACTS["xstate"]))
    assert x["xcr0"] == "0x600e7"
    assert x["enabled"] == {"SSE": True, "AVX": True, "AVX-512": True, "AMX": True}
    assert x["amx_cpuid"] is True and x["amx_permission"] == "ok" and x["amx_tile_run"] == "ok"


def test_xstate_fact_reads_a_kernel_without_avx512_state():
    x = FACTS["xstate"].parse({"xstate": "xcr0=0x7\nxcomp_supp=0x7\nxcomp_perm=0x7\namx_cpuid=0\n"
                                         "amx_perm=skipped\namx_tile_run=skipped\n"})
    assert x["enabled"] == {"SSE": True, "AVX": True, "AVX-512": False, "AMX": False}
    assert x["kernel_supports_amx"] is False and x["amx_cpuid"] is False
    empty = FACTS["xstate"].parse({})
    assert empty["read"] is False and empty["enabled"]["AVX"] is None


# ---- paired rounds --------------------------------------------------------------------------------
def _series(ratio, rounds, drift, noise, seed):
    rnd = random.Random(seed)
    a = [100 * (1 + drift * i) * rnd.gauss(1, noise) for i in range(rounds)]
    b = [100 * (1 + drift * i) * ratio * rnd.gauss(1, noise) for i in range(rounds)]
    return a, b


def test_paired_ratio_recovers_a_known_ratio_through_drift():
    """A constant 5% gain under a 1%-per-round drift (10% over the run) and 1% noise: the paired
    ratio's CI contains 1.05 and excludes 1, while pooling all samples would see the drift as spread."""
    hits = 0
    for seed in range(40):
        a, b = _series(1.05, 10, 0.01, 0.01, seed)
        r = stats.paired_ratio(a, b, "A", "B")
        hits += r.ci_low <= 1.05 <= r.ci_high
        assert r.verdict == "higher" and r.rounds == 10
    assert hits >= 34  # a 95% interval: about 38 of 40 expected
    pooled = stats.summarize(a)
    assert pooled.cv > 0.02 > stats.paired_ratio(a, b).half_width


def test_paired_ratio_equivalence_needs_the_whole_ci_inside_the_band():
    a, b = _series(1.0, 20, 0.0, 0.002, 3)
    assert stats.paired_ratio(a, b).verdict == "equivalent"
    a, b = _series(1.0, 3, 0.0, 0.05, 3)  # few noisy rounds: cannot tell
    r = stats.paired_ratio(a, b)
    assert r.verdict == "not shown" and r.ci_low < 0.98 and "not shown" in r.describe()
    a, b = _series(0.9, 8, 0.0, 0.01, 1)
    assert stats.paired_ratio(a, b).verdict == "lower"


def test_paired_ratio_with_too_few_rounds():
    assert stats.paired_ratio([], []).verdict == "no data"
    one = stats.paired_ratio([100.0], [110.0])
    assert one.rounds == 1 and math.isclose(one.ratio, 1.1) and one.verdict == "no data"


def test_drift_of_a_series():
    d = stats.drift([100, 101, 102, 103, 104])
    assert math.isclose(d["slope_per_round"], 1 / 102, rel_tol=1e-6)
    assert math.isnan(stats.drift([1, 2])["slope_per_round"])


def test_plan_mode_lists_the_verification_and_runs_nothing(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    w = verify.working_build(run, tmp_path / "model.gguf")
    assert w.planned and len(w.attempts) == 1 and "planned" in w._repr_markdown_()
    planned = [r for r in run.runner.history if r.planned]
    assert all(r.rc is None for r in planned)
    smoke = next(r for r in planned if r.argv[0].endswith("llama-bench"))
    assert smoke.argv[smoke.argv.index("-p") + 1] == str(verify.SMOKE_PROMPT) and "-t" in smoke.argv
    assert any(r.argv[0].endswith("llama-server") for r in planned)
    assert any(r.argv[0].endswith("test-quantize-fns") for r in planned)
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_isa_layers_say_why_an_extension_is_off(fixtures):
    """The AMX machine's survey with the record of a native build that died in AMX and a build
    without AMX in use: AMX is advertised and enabled, gcc enables it, the build used lacks it."""
    from aios_lib.facts import research
    from aios_lib.facts.survey import parse_outputs

    s = parse_outputs({n: load_fixture(fixtures / "facts" / "dev-vm-xeon-amx", f) for n, f in FACTS.items()})
    native = {"enabled": ["avx2", "fma", "f16c", "avx512f", "avx512vnni", "amx-tile", "amx-int8"]}
    crash = {"signal": "SIGILL", "function": "tinygemm_kernel_amx<...>", "extension": "AMX"}
    working = {"build": {"label": "native-no-amx", "features": ["AVX2", "FMA", "F16C", "AVX512", "AVX512_VNNI"],
                         "patches": []},
               "attempts": [{"build": {"features": ["AVX2", "FMA", "AVX512", "AVX512_VNNI", "AMX_INT8"]},
                             "verification": {"crash": crash}}]}
    t = research.isa_layers(s["cpu"], s["xstate"], native, working).set_index("extension")
    amx = t.loc["AMX"]
    assert (amx["advertised (cpuinfo)"], amx["enabled by the kernel"], amx["gcc -march=native"],
            amx["in the build used"]) == ("yes", "yes", "yes", "no")
    assert amx["why"].startswith("switched off: the build with it died (SIGILL in tinygemm_kernel_amx")
    assert t.loc["AVX2", "why"] == "used by the verified build"
    assert t.loc["AVX-VNNI", "gcc -march=native"] == "no"
    assert t.loc["AVX-VNNI", "why"] == "the compiler does not enable it with -march=native"
    # without the kernel's AVX-512 state, an advertised AVX-512 is unusable whatever the build says
    off = {**s["xstate"], "enabled": {**s["xstate"]["enabled"], "AVX-512": False}}
    t2 = research.isa_layers(s["cpu"], off).set_index("extension")
    assert t2.loc["AVX-512", "enabled by the kernel"] == "no" and "XCR0" in t2.loc["AVX-512", "why"]
