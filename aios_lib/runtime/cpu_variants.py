"""Which CPU backend modules the stock (release-style) llama.cpp build needs on this CPU.

llama.cpp's releases are built with ``GGML_BACKEND_DL`` and ``GGML_CPU_ALL_VARIANTS``: one
``libggml-cpu-<variant>.so`` per x86 microarchitecture (x64, sse42, ..., haswell, ..., sapphirerapids),
and at start-up ggml's loader asks every module for its score on this CPU and loads the one with the
highest. The score function is ggml's own ``cpu-feats.cpp`` compiled with the variant's feature
macros: a variant that needs a feature the CPU lacks scores 0, otherwise each feature adds its bit.

Compiling every module costs about ten minutes on 2 cores, and only one is ever loaded here. So
Synapse compiles ``cpu-feats.cpp`` once per variant (half a second each, the variant's macros from the
source tree's own variant table), asks each the score it gives this CPU (real CPUID, in a process of
its own) and builds stock with the winner plus ``haswell`` (x86-64-v3, which the decomposition
measures). Among those the loader picks the same module it would pick among all of them.
``runtime.llama.stock_variants: all`` builds every module instead, as a release ships.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..core import cache
from ..core.paths import cache_path
from ..facts import gather, llama as llama_facts
from ..facts.base import Fact

#: the module the stock-vs-native decomposition measures (AVX2, FMA, F16C, BMI2: x86-64-v3)
X86_64_V3 = "haswell"
#: what a planned run shows for the module it cannot score before it runs
PLANNED_BEST = "best-by-score"

#: the compile line of one score probe: the definitions ggml's CMake gives the ``-feats`` object
PROBE_DEFINES = ("GGML_BACKEND_DL", "GGML_BACKEND_BUILD", "GGML_BACKEND_SHARED")

#: loads each probe (one ``ggml_backend_score`` per library) and prints ``<variant> <score>``
SCORE_PROBE = """
import ctypes, sys
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1][len("score-"):-len(".so")]
    print(name, ctypes.CDLL(path).ggml_backend_score())
"""


def parse_scores(text: str) -> dict[str, int]:
    """``<variant> <score>`` lines -> {variant: score}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def scores_fact(probes: list[Path]) -> Fact:
    """The score ggml's loader gives each variant on this CPU (each probe loaded in one process)."""
    return Fact(name="ggml CPU variant scores",
                commands={"scores": (sys.executable, "-c", SCORE_PROBE, *[str(p) for p in probes])},
                parse=lambda o: parse_scores(o.get("scores") or ""), timeouts={"scores": 60})


def best(scores: dict[str, int]) -> str | None:
    """The module the loader loads: the highest score above 0 (None: no module runs here)."""
    ok = {k: v for k, v in scores.items() if v > 0}
    return max(ok, key=lambda k: ok[k]) if ok else None


def variant_table(src: Path) -> list[tuple[str, list[str]]]:
    """The x86 variants the source tree's ``ggml/src/CMakeLists.txt`` declares."""
    return llama_facts.parse_cpu_variants((src / "ggml" / "src" / "CMakeLists.txt").read_text(errors="replace"))


def probe_libraries(run, src: Path, compiler: str, source: dict) -> list[Path]:
    """One ``score-<variant>.so`` per variant: ``cpu-feats.cpp`` compiled with the variant's macros
    (cached by source and compiler: the scores themselves are asked afresh every time)."""
    r = run.runner
    table = variant_table(src) if (src / "ggml").exists() else []
    dest = cache_path("llama-variant-scores", cache.key({"source": source, "compiler": compiler}))
    if not run.plan:
        dest.mkdir(parents=True, exist_ok=True)
    feats = src / "ggml" / "src" / "ggml-cpu" / "arch" / "x86" / "cpu-feats.cpp"
    out = []
    for name, features in table:
        lib = dest / f"score-{name}.so"
        if not lib.exists():
            tmp = lib.with_suffix(".so.tmp")
            r.work(["c++", "-std=c++17", "-O1", "-fPIC", "-shared", f"-I{src}/ggml/src", f"-I{src}/ggml/src/ggml-cpu",
                    f"-I{src}/ggml/include", *[f"-D{d}" for d in PROBE_DEFINES],
                    *[f"-DGGML_{f}" for f in features], str(feats), "-o", str(tmp)],
                   quiet=True, note=f"ggml's score function for the {name} CPU module")
            r.work(["mv", str(tmp), str(lib)], quiet=True)
        out.append(lib)
    return out


def stock_variants(run, src: Path, compiler: str, source: dict) -> tuple[list[str], dict[str, int]]:
    """(the modules to build for stock here, every variant's score on this CPU).

    The best-scoring module plus x86-64-v3; in plan mode the scores are not known yet."""
    probes = probe_libraries(run, src, compiler, source)
    if run.plan and not (probes and all(p.exists() for p in probes)):
        return [PLANNED_BEST, X86_64_V3], {}  # the probes are not compiled yet: scored when the run is real
    scores = gather(run.runner, scores_fact(probes))
    if not scores:
        raise RuntimeError(f"no CPU variant of {src} could be scored on this machine (see the journal); set "
                           "runtime.llama.stock_variants: all to build every module as a release does")
    top = best(scores)
    names = [n for n in (top, X86_64_V3) if n]
    return list(dict.fromkeys(names)), scores
