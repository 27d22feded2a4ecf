"""What phase 5 measures: phase 4's verified builds and models, taken from this run's record (or
from phase 4's cache, verified here, when 04 did not run in this run folder), and the test sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..facts import gather, llama as llama_facts
from ..facts.llama import default_threads
from ..runtime import cpus


# ---- the phase's inputs and plan --------------------------------------------------------------
@dataclass
class Inputs:
    """What phase 5 measures, from phase 4's record (or phase 4's cached functions)."""

    bench: str
    server: str
    generic_bench: str | None
    model: dict
    quantized: dict[str, dict]
    synthetic: dict[str, dict]
    planned: bool
    help_text: str = ""
    help: dict | None = None
    nproc: int = 1
    source: str = "recorded"

    def _repr_markdown_(self) -> str:
        rows = [f"- llama-bench: `{self.bench}`" + (" (not built yet: planned)" if self.planned else ""),
                f"- generic llama-bench: `{self.generic_bench}`" if self.generic_bench else "- generic build: none",
                f"- model: {self.model.get('name')} `{Path(self.model.get('path', '')).name}` "
                f"({(self.model.get('file_size') or 0) / 1e6:.1f} MB, sha256 `{self.model.get('sha256')}`)",
                f"- quantized: {', '.join(self.quantized) or 'none'}",
                f"- SYNTHETIC (random weights) quantized: {', '.join(self.synthetic) or 'none'}",
                f"- logical CPUs (nproc): {self.nproc}; llama-bench's default threads: "
                f"{default_threads(self.help) if self.help else 'unknown'}",
                f"- inputs from: {self.source}"]
        return "\n".join(rows)


def _d(x) -> dict | None:
    if x is None:
        return None
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def inputs(run) -> Inputs:
    """Phase 4's build, generic build, model and quantized models.

    Read from this run's results.json when phase 04 ran in it; otherwise phase 4's functions are
    called (they reuse the cache, and in plan mode only plan)."""
    build = run.recorded("04", "build")
    mdl = run.recorded("04", "model")
    source = "phase 04 in this run (results.json)"
    generic = run.recorded("04", "build_generic")
    quantized = run.recorded("04", "quantized") or {}
    syn = run.recorded("04", "synthetic") or {}
    if not build or not mdl:
        from ..runtime import model, verify

        source = "phase 4's cache, verified here (phase 04 did not run in this run folder)"
        m = model.provision(run)
        mdl = _d(m)
        b = verify.working_build(run, m.path).build
        build = _d(b)
        rp = run.params.runtime
        if rp.llama.compare_generic:
            generic = _d(verify.generic_build(run, m.path).build)
        quantized = {q: _d(model.quantize(run, b, m, q)) for q in rp.bench.quantizations}
        if rp.synthetic.enabled:
            s = model.synthetic_model(run, b)
            syn = {"quantized": {q: _d(model.quantize(run, b, s, q)) for q in rp.synthetic.quantizations}}
    bin_dir = Path(build["bin_dir"])
    planned = bool(build.get("planned")) or bool(mdl.get("planned")) or not (bin_dir / "llama-bench").exists()
    nproc = cpus.usable_cpus(run)
    help_text, help_info = "", None
    if (bin_dir / "llama-bench").exists():
        h = gather(run.runner, llama_facts.bench_help(bin_dir / "llama-bench"))
        help_text, help_info = h["text"], h["help"]
    gen_bench = None
    if generic:
        gen_bench = str(Path(generic["bin_dir"]) / "llama-bench")
    synq = {q: d for q, d in ((syn or {}).get("quantized") or {}).items() if d}
    return Inputs(bench=str(bin_dir / "llama-bench"), server=str(bin_dir / "llama-server"), generic_bench=gen_bench,
                  model=mdl, quantized={q: d for q, d in quantized.items() if d}, synthetic=synq, planned=planned,
                  help_text=help_text, help=help_info, nproc=nproc, source=source)


@dataclass
class Sizes:
    prompt: list[int]
    gen: list[int]
    reps: int
    rounds: int
    threads: list[int]
    syn_prompt: list[int]
    syn_gen: list[int]
    syn_reps: int


def sizes(run, inp: Inputs) -> Sizes:
    """Test sizes from ``runtime.bench`` (``quick: true`` shrinks everything for the test suite)."""
    b = run.params.runtime.bench
    threads = cpus.sweep(run, inp.nproc)
    if b.quick:
        return Sizes([64], [16], 2, 2, threads, [32], [8], 2)
    return Sizes(list(b.prompt_sizes), list(b.gen_sizes), b.repetitions, b.rounds, threads, [128], [32],
                 max(2, min(b.repetitions, 3)))
