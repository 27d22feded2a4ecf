"""What a llama.cpp build reports about itself: the options its programs accept (``--help``), its
version, the CPU features its ggml-cpu library was compiled with, its CMake cache, its source tree.

Each read is a fact (the command plus a pure parse, tested on captured output in
``tests/fixtures/llama/`` and ``tests/fixtures/bench/``); the phase modules compose them
(:mod:`aios_lib.runtime.llama`, :mod:`aios_lib.benchmark.inputs`, :mod:`aios_lib.service.unit_checks`).
The programs print ``--help`` and ``--version`` partly to stderr, so those facts read both streams.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping

from .base import Fact


def _both(o: Mapping[str, str], key: str) -> str:
    """stdout then stderr of a status command (how the programs' own text is read)."""
    return (o.get(key) or "") + (o.get(f"{key}.stderr") or "")


# ---- --help ----------------------------------------------------------------------------------------
def parse_help(text: str) -> dict:
    """Flags and defaults from ``llama-bench --help``: {"flags": set, "defaults": {flag: str}, ...}."""
    flags: set[str] = set()
    defaults: dict[str, str] = {}
    choices: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("-"):
            continue
        m = re.match(r"^((?:-[\w-]+(?:,\s*|\s+(?=-)))*-[\w-]+)\s*(<[^>]*>)?", s)
        if not m:
            continue
        names = [n.strip() for n in re.split(r"[,\s]+", m.group(1)) if n.strip().startswith("-")]
        flags.update(names)
        d = re.search(r"\(default:\s*([^)]*)\)", s)
        for n in names:
            if d:
                defaults[n] = d.group(1).strip()
            if m.group(2):
                choices[n] = m.group(2)
    return {"flags": flags, "defaults": defaults, "choices": choices}


def default_threads(help_info: dict) -> int | None:
    """llama-bench's own default ``-t`` (what it uses when no ``-t`` is given)."""
    v = help_info["defaults"].get("-t") or help_info["defaults"].get("--threads")
    return int(v) if v and v.isdigit() else None


def flash_attn_values(help_info: dict) -> tuple[str, str]:
    """How this llama-bench spells flash attention on/off (new: on|off|auto; old: 0|1)."""
    ch = help_info["choices"].get("-fa", "")
    return ("on", "off") if "on" in ch else ("1", "0")


def bench_help(binary: str | Path) -> Fact:
    """``llama-bench --help``: {"text": both streams, "help": :func:`parse_help` of it}."""
    def parse(o: Mapping[str, str]) -> dict:
        text = _both(o, "help")
        return {"text": text, "help": parse_help(text)}

    return Fact(name="llama-bench --help", commands={"help": (str(binary), "--help")}, parse=parse,
                status=frozenset({"help"}))


_HELP_FLAG = re.compile(r"^\s{0,2}(-{1,2}[A-Za-z0-9][\w-]*(?:,\s*-{1,2}[A-Za-z0-9][\w-]*)*)")


def parse_help_flags(text: str) -> set[str]:
    """The options a program's ``--help`` lists (``-t,    --threads N`` -> {-t, --threads}).

    Kept beside :func:`parse_help` rather than merged: on the captured help texts they disagree.
    :func:`parse_help` takes llama-server's ``----- common params -----`` headers and
    ``--spec-ngram-mod-n-min`` for options (``-----``, ``--spec-ngram-``); this one misses
    llama-bench's space-separated ``-ot --override-tensor``."""
    flags: set[str] = set()
    for ln in (text or "").splitlines():
        m = _HELP_FLAG.match(ln)
        if m:
            flags.update(f.strip() for f in m.group(1).split(","))
    return flags


def help_flags(program: str | Path) -> Fact:
    """The options ``<program> --help`` lists; the launcher finds its lib*.so next to it."""
    env = {"LD_LIBRARY_PATH": str(Path(program).resolve().parent)}
    return Fact(name=f"{Path(program).name} --help", commands={"help": (str(program), "--help")},
                parse=lambda o: parse_help_flags(_both(o, "help")), status=frozenset({"help"}),
                env={"help": env}, timeouts={"help": 60})


# ---- --version ----------------------------------------------------------------------------------
def parse_version(text: str) -> str:
    """``llama-bench --version`` (on stderr): its ``version:`` and ``built with`` lines as one line;
    the first 200 characters of whatever it printed when it has neither."""
    version = " ".join(ln.strip() for ln in text.splitlines() if ln.strip().startswith(("version", "built with")))
    return version or text.strip()[:200]


def version(exe: str | Path) -> Fact:
    return Fact(name=f"{Path(exe).name} --version", commands={"version": (str(exe), "--version")},
                parse=lambda o: parse_version(_both(o, "version")), status=frozenset({"version"}))


# ---- CPU features -------------------------------------------------------------------------------
_FEATURE = re.compile(r"\b([A-Z][A-Z0-9_]+)\s*=\s*1\b")


def parse_features(text: str) -> list[str]:
    """CPU features that are on, from a llama.cpp ``system_info`` line (``CPU : SSE3 = 1 | AVX2 = 1 | ...``)
    or from the one-per-line ``NAME = 1`` list :data:`FEATURES_PROBE` prints."""
    feats: list[str] = []
    lines = text.splitlines()
    info = [ln for ln in lines if "system_info" in ln or "CPU :" in ln]
    for line in info or lines:
        for m in _FEATURE.finditer(line):
            if m.group(1) not in feats:
                feats.append(m.group(1))
    return feats


#: Asks the built libggml-cpu.so which CPU features it was compiled with: the same list
#: llama.cpp's ``system_info`` line prints (``ggml_backend_get_features`` of the CPU backend).
#: Runs in its own process (two builds' libraries must never meet in one process).
FEATURES_PROBE = """
import ctypes, sys
d = sys.argv[1]
base = ctypes.CDLL(d + "/libggml-base.so", mode=ctypes.RTLD_GLOBAL)
cpu = ctypes.CDLL(d + "/libggml-cpu.so", mode=ctypes.RTLD_GLOBAL)
cpu.ggml_backend_cpu_reg.restype = ctypes.c_void_p
reg = cpu.ggml_backend_cpu_reg()
base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
fn = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
class Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]
p = ctypes.CFUNCTYPE(ctypes.POINTER(Feature), ctypes.c_void_p)(fn)(reg)
i = 0
while p[i].name:
    print(p[i].name.decode() + " = " + p[i].value.decode())
    i += 1
"""


def features(bin_dir: str | Path) -> Fact:
    """The features of ``<bin_dir>/libggml-cpu.so`` (:data:`FEATURES_PROBE`); [] when it cannot be
    loaded (a GGML_BACKEND_DL build has one libggml-cpu-<variant>.so per CPU instead)."""
    return Fact(name="ggml-cpu features",
                commands={"probe": (sys.executable, "-c", FEATURES_PROBE, str(bin_dir))},
                parse=lambda o: parse_features(o.get("probe") or ""), optional=frozenset({"probe"}),
                timeouts={"probe": 60})


#: a model path that does not exist: llama-server prints its system_info and exits, loading nothing
NO_MODEL = "/nonexistent-model.gguf"


def server_features(server: str | Path) -> Fact:
    """The features llama-server's ``system_info`` line names when it starts without a model
    (newer servers no longer print that line before the model loads: then [])."""
    return Fact(name="llama-server system_info",
                commands={"server": (str(server), "-m", NO_MODEL, "--port", "0")},
                parse=lambda o: parse_features(_both(o, "server")), status=frozenset({"server"}),
                timeouts={"server": 60})


# ---- the build folder and the source tree (files read by the caller) --------------------------------
def parse_cmake_cache(text: str) -> dict[str, str]:
    """``CMakeCache.txt`` -> {name: value} (``NAME:TYPE=value`` lines)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def parse_march(text: str) -> str | None:
    """The first ``-march=`` flag in ``compile_commands.json`` or ``build.ninja`` text."""
    m = re.search(r"(-march=\S+)", text)
    return m.group(1).strip('",') if m else None


def parse_cmake_version(text: str, prefix: str) -> str | None:
    """``set(<prefix>_VERSION_MAJOR 0)`` ... in a CMakeLists.txt -> ``0.5.0`` (None without all three)."""
    parts = [re.search(rf"set\({prefix}_VERSION_{k}\s+(\d+)\)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return None
    return ".".join(m.group(1) for m in parts)  # type: ignore[union-attr]


_VARIANT = re.compile(r"^\s*ggml_add_cpu_backend_variant\(\s*([\w.]+)((?:\s+\w+)*)\s*\)", re.M)


def parse_cpu_variants(text: str) -> list[tuple[str, list[str]]]:
    """The x86 CPU backend variants ``ggml/src/CMakeLists.txt`` declares for GGML_CPU_ALL_VARIANTS:
    [(name, [feature, ...])], e.g. ``("haswell", ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"])``."""
    start = text.find("if (GGML_CPU_ALL_VARIANTS)")
    if start < 0:
        return []
    x86 = re.search(r'GGML_SYSTEM_ARCH STREQUAL "x86"\s*\)(.*?)\n\s*elseif\s*\(', text[start:], re.S)
    if not x86:
        return []
    return [(m.group(1), m.group(2).split()) for m in _VARIANT.finditer(x86.group(1))]


def source_commit(tree: str | Path) -> Fact:
    """``git rev-parse HEAD`` of a cloned tree (fails loudly: a clone without HEAD is broken)."""
    return Fact(name="llama.cpp commit", commands={"head": ("git", "-C", str(tree), "rev-parse", "HEAD")},
                parse=lambda o: (o.get("head") or "").strip())
