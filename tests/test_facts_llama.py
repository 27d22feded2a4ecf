"""What a llama.cpp build reports about itself, parsed from captured output of a real build
(llama.cpp 0.5.0 / ggml 0.25.3, the native build on the dev VM)."""
from aios_lib.facts import llama


def test_bench_help(fixtures):
    h = llama.parse_help((fixtures / "bench" / "llama-bench-help.txt").read_text())
    assert {"-t", "-p", "-n", "-r", "-o", "-fa", "-lm", "--load-mode", "--no-warmup", "--threads"} <= h["flags"]
    assert "-mmp" not in h["flags"]  # gone from current llama-bench
    assert llama.default_threads(h) == 2
    assert llama.flash_attn_values(h) == ("on", "off")
    assert llama.flash_attn_values({"choices": {"-fa": "<0|1>"}}) == ("1", "0")
    fact = llama.bench_help("/b/llama-bench")
    text = (fixtures / "bench" / "llama-bench-help.txt").read_text()
    parsed = fact.parse({"help": text, "help.stderr": "", "help.rc": 0})
    assert parsed["text"] == text and parsed["help"] == h


def test_server_help_flags(fixtures):
    text = (fixtures / "llama" / "llama-server-help.txt").read_text()
    flags = llama.parse_help_flags(text)
    assert {"-t", "--threads", "-lm", "--load-mode", "--metrics", "-np", "--parallel", "-c", "--host"} <= flags
    assert "--mlock" not in flags  # this llama.cpp has no --mlock (the load mode says it)
    fact = llama.help_flags("/opt/synapse/llama/llama-server")
    assert fact.env["help"] == {"LD_LIBRARY_PATH": "/opt/synapse/llama"} and fact.timeouts["help"] == 60
    # the program may print its help on stderr: both streams are read
    assert fact.parse({"help": "", "help.stderr": text, "help.rc": 0}) == flags


def test_version_features_and_cmake_cache(fixtures):
    d = fixtures / "llama"
    v = llama.parse_version((d / "llama-bench-version.stderr.txt").read_text())
    assert v == "version: 0.5.0-dev (build 0, commit unknown) built with GNU 12.2.0 for Linux x86_64"
    assert llama.parse_version("no such option\n") == "no such option"
    feats = llama.parse_features((d / "features-probe-native.txt").read_text())
    assert feats[:3] == ["SSE3", "SSSE3", "AVX"] and {"AVX512_BF16", "AMX_INT8", "OPENMP"} <= set(feats)
    assert len(feats) == 16
    # this llama-server no longer prints system_info before it loads a model: no features from it
    assert llama.parse_features((d / "llama-server-no-model.stderr.txt").read_text()) == []
    cache = llama.parse_cmake_cache((d / "CMakeCache-native.txt").read_text())
    assert cache["GGML_NATIVE"] == "ON" and cache["CMAKE_BUILD_TYPE"] == "Release" and cache["GGML_AVX2"] == "OFF"


def test_system_info_line():
    line = ("system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | "
            "AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | LLAMAFILE = 0 | OPENMP = 1 | REPACK = 1 |")
    feats = llama.parse_features(line)
    assert feats[:2] == ["SSE3", "SSSE3"] and "AVX2" in feats and "OPENMP" in feats and "LLAMAFILE" not in feats


def test_tree_and_build_files(fixtures):
    d = fixtures / "llama"
    assert llama.parse_cmake_version((d / "tree-CMakeLists.txt").read_text(), "LLAMA") == "0.5.0"
    assert llama.parse_cmake_version((d / "tree-ggml-CMakeLists.txt").read_text(), "GGML") == "0.25.3"
    assert llama.parse_cmake_version((d / "tree-CMakeLists.txt").read_text(), "GGML") is None
    # the same versions the binary reports (llama-bench --version of that build: 0.5.0-dev)
    assert llama.parse_march((d / "compile_commands-ggml-cpu.json").read_text()) == "-march=native"
    assert llama.parse_march((d / "tree-CMakeLists.txt").read_text()) is None
