"""What phase 5 measures: phase 4's verified builds and models, taken from this run's record (or
from phase 4's cache, verified here, when 04 did not run in this run folder), and the test sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..facts import FACTS, gather, llama as llama_facts
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
    #: phase 04's stock build (llama.cpp as its releases ship it) and whether it runs here
    stock: dict | None = None
    #: the SYNTHETIC quantisation the speed questions use, and the last-level cache it is set against
    headline: str = "Q4_K_M"
    llc_bytes: int | None = None

    @property
    def memory_model(self) -> dict | None:
        """The memory-bound model of the speed questions (the SYNTHETIC headline quantisation)."""
        return self.synthetic.get(self.headline)

    def model_over_llc(self) -> float | None:
        m = self.memory_model
        size = (m or {}).get("file_size")
        return size / self.llc_bytes if size and self.llc_bytes else None

    def _repr_markdown_(self) -> str:
        mm = self.memory_model or {}
        ratio = self.model_over_llc()
        stock = self.stock or {}
        rows = [f"- llama-bench (verified build): `{self.bench}`" + (" (not built yet: planned)" if self.planned else ""),
                f"- stock build: `{(stock.get('build') or {}).get('bin_dir', 'not built')}`"
                + (f": {stock.get('finding')}" if stock.get("finding") else ""),
                f"- real model: {self.model.get('name')} `{Path(self.model.get('path', '')).name}` "
                f"({(self.model.get('file_size') or 0) / 1e6:.1f} MB, sha256 `{self.model.get('sha256')}`)",
                f"- memory-bound model: SYNTHETIC {self.headline} `{Path(mm.get('path', '')).name}` "
                f"({(mm.get('file_size') or 0) / 1e9:.2f} GB"
                + (f", {ratio:.1f} x the last-level cache of {self.llc_bytes / 2**20:.0f} MiB)" if ratio else ")"),
                f"- SYNTHETIC (random weights) quantisations: {', '.join(self.synthetic) or 'none'}",
                f"- logical CPUs (nproc): {self.nproc}; llama-bench's default threads: "
                f"{default_threads(self.help) if self.help else 'unknown'}",
                f"- inputs from: {self.source}"]
        return "\n".join(rows)


def last_level_cache(cpu: dict | None) -> int | None:
    """Bytes of the largest cache level the survey reports (per instance)."""
    caches = (cpu or {}).get("caches") or {}
    sizes = [c.get("per_instance_bytes") or c.get("total_bytes") for c in caches.values()]
    sizes = [s for s in sizes if s]
    return max(sizes) if sizes else None


def _d(x) -> dict | None:
    if x is None:
        return None
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def inputs(run) -> Inputs:
    """Phase 4's verified build, stock build, models and quantisations.

    Read from this run's results.json when phase 04 ran in it; otherwise phase 4's functions are
    called (they reuse the cache, verify, and in plan mode only plan)."""
    build = run.recorded("04", "build")
    mdl = run.recorded("04", "model")
    source = "phase 04 in this run (results.json)"
    generic = run.recorded("04", "build_generic")
    quantized = run.recorded("04", "quantized") or {}
    syn = run.recorded("04", "synthetic") or {}
    stock = run.recorded("04", "stock_build")
    rp = run.params.runtime
    if not build or not mdl:
        from ..runtime import llama, model, verify

        source = "phase 4's cache, verified here (phase 04 did not run in this run folder)"
        m = model.provision(run)
        mdl = _d(m)
        b = verify.working_build(run, m.path).build
        build = _d(b)
        if rp.llama.compare_generic:
            generic = _d(verify.generic_build(run, m.path).build)
        quantized = {q: _d(model.quantize(run, b, m, q)) for q in rp.bench.quantizations}
        if rp.synthetic.enabled:
            syn = {"quantized": {q: _d(i) for q, i in model.synthetic_quantizations(run, b).items()}}
        if rp.llama.compare_stock:
            stock = verify.stock_finding(run, llama.build_release(run), m.path)
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
    cpu = (run.recorded("01", "survey") or {}).get("cpu") or gather(run.runner, FACTS["cpu"])
    return Inputs(bench=str(bin_dir / "llama-bench"), server=str(bin_dir / "llama-server"), generic_bench=gen_bench,
                  model=mdl, quantized={q: d for q, d in quantized.items() if d}, synthetic=synq, planned=planned,
                  help_text=help_text, help=help_info, nproc=nproc, source=source, stock=stock,
                  headline=rp.synthetic.headline, llc_bytes=last_level_cache(cpu))


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
