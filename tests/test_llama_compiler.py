"""Blueprint 2.2: -march=native parsing (captured gcc 12 output from the dev machine) and makepkg.conf."""
from aios_lib.facts import toolchain
from aios_lib.runtime import compiler


def test_parse_help_target(fixtures):
    opts = toolchain.parse_help_target((fixtures / "llama" / "gcc12-march-native-help-target.txt").read_text())
    assert opts["-march="] == "icelake-client"
    assert opts["-mavx2"] == "enabled" and opts["-mfma"] == "enabled" and opts["-mavx512f"] == "enabled"
    assert opts["-mavx512bf16"] == "disabled" and opts["-mamx-tile"] == "disabled"
    assert opts["-mtune="] == "generic"


def test_parse_cc1(fixtures):
    cc1 = toolchain.parse_cc1((fixtures / "llama" / "gcc12-march-native-E-v.txt").read_text())
    assert cc1["march"] == "icelake-client" and cc1["mtune"] == "generic"
    assert {"avx2", "fma", "f16c", "bmi2", "avx512vnni", "avx512vbmi"} <= set(cc1["enabled"])
    assert "avx512bf16" in cc1["disabled"] and "avxvnni" in cc1["disabled"]
    assert cc1["params"]["l1-cache-line-size"] == "64"


def test_native_target_rows_compare_with_cpu(fixtures):
    cc1 = toolchain.parse_cc1((fixtures / "llama" / "gcc12-march-native-E-v.txt").read_text())
    flags = (fixtures / "llama" / "cpuinfo-flags.txt").read_text().split(":", 1)[1].split()
    t = compiler.NativeTarget("gcc 12", cc1["march"], cc1["mtune"], cc1["enabled"], cc1["disabled"], flags)
    rows = {r["isa"]: r for r in t.isa_rows()}
    assert rows["avx2"]["gcc -march=native"] and rows["avx2"]["cpu (/proc/cpuinfo)"]
    # this VM's CPUID hides AVX512-BF16, and gcc's -march=native (which reads CPUID) agrees
    assert t.missed() == []
    t.cpu_flags = flags + ["avx512_bf16"]  # a CPU that has it: gcc 12's icelake-client would miss it
    assert t.missed() == ["avx512bf16"]
    assert "icelake-client" in t._repr_markdown_()


def test_native_target_live(runner):
    class R:  # a minimal run: native_target only needs .runner
        pass
    r = R()
    r.runner = runner
    t = compiler.native_target(r)
    assert t.march and "avx2" in t.enabled  # this project targets AVX2 machines
    assert all(c.kind == "probe" for c in runner.history)


def test_makepkg_conf_states_risks_and_fixes_blueprint():
    text = compiler.makepkg_conf("znver4")
    assert 'CFLAGS="-march=znver4 -O3 -pipe -fno-plt' in text
    assert "-fopenmp" not in text.split("CFLAGS=", 1)[1]  # named as a risk, not set
    assert "COMPRESSZST=(zstd -c -T0 -)" in text
    assert "-fstack-clash-protection" in text and "relro" in text
    for risk, _ in compiler.MAKEPKG_RISKS:
        assert risk in text
