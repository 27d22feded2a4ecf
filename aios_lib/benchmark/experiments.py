"""Phase 5's experiments: the thread sweep, flash attention, the three configurations, native vs
generic, the quantisation A/B, and the choice of the runbook's configuration.

Each experiment is a list of llama-bench configurations measured in interleaved rounds by
:mod:`aios_lib.measure.experiment`; its inputs come from :mod:`aios_lib.benchmark.inputs`.
"""
from __future__ import annotations

from pathlib import Path

from ..facts.llama import flash_attn_values
from ..measure.experiment import Experiment, experiment
from ..measure.llama_bench import BenchConfig
from ..runtime.cpus import MEASURED, CpuPlan, cpu_plan
from .inputs import Inputs, Sizes, inputs, sizes


def cfg(inp: Inputs, label: str, threads: int, sz: Sizes, *, model: dict | None = None, bench: str | None = None,
        flags: dict | None = None, prompt=None, gen=None, reps=None, note: str = "") -> BenchConfig:
    """One llama-bench configuration of phase 5: phase 4's binary and model unless named, the sizes of ``sz``."""
    return BenchConfig(label=label, bench=bench or inp.bench, model=str((model or inp.model)["path"]), threads=threads,
                       prompt=list(sz.prompt if prompt is None else prompt), gen=list(sz.gen if gen is None else gen),
                       reps=sz.reps if reps is None else reps, flags=dict(flags or {}), note=note)


def thread_sweep(run, inp: Inputs, sz: Sizes | None = None) -> Experiment:
    """Every thread count in the sweep, interleaved; the best is chosen by measured tg."""
    sz = sz or sizes(run, inp)
    confs = [cfg(inp, f"t={t}", t, sz, prompt=sz.prompt[:1]) for t in sz.threads]
    ex = experiment(run, "thread_sweep", f"Thread sweep 1..{max(sz.threads)} ({Path(inp.model['path']).name})",
                    confs, sz.rounds, inp.help, baseline=f"t={max(sz.threads)}",
                    notes=["threads are chosen by measured tg (token generation: what a chat user waits on); "
                           "pp is shown too"])
    ex.extra["threads"] = sz.threads
    best = ex.best("tg")  # a label; its configuration holds the thread count
    ex.extra["best"] = next(c["threads"] for c in ex.configs if c["label"] == best) if best else None
    return ex


def flash_attn_ab(run, inp: Inputs, threads: int, sz: Sizes | None = None) -> Experiment:
    """-fa on against -fa off at the chosen thread count, interleaved."""
    sz = sz or sizes(run, inp)
    on, off = flash_attn_values(inp.help) if inp.help else ("on", "off")
    r = min(sz.reps, 3)
    confs = [cfg(inp, "fa off", threads, sz, flags={"-fa": off}, prompt=sz.prompt[:1], reps=r),
             cfg(inp, "fa on", threads, sz, flags={"-fa": on}, prompt=sz.prompt[:1], reps=r)]
    return experiment(run, "flash_attn", f"Flash attention off vs on (t={threads})", confs, sz.rounds, inp.help,
                      baseline="fa off")


def choose(sweep: Experiment, fa: Experiment | None, threads: CpuPlan) -> dict:
    """The runbook's configuration: the thread count of ``threads`` (:func:`aios_lib.runtime.cpus.cpu_plan`
    with the sweep's best), plus -fa when it measured better."""
    flags: dict[str, str] = {}
    why = [f"threads {threads.threads}: highest mean tg in the sweep" if threads.source == MEASURED
           else f"threads {threads.threads}: not measured (plan mode): llama-bench's default"]
    if fa is not None and not fa.planned:
        tg = [t for t in fa.tests() if t.startswith("tg")]
        if tg:
            c = fa.compare("fa off", "fa on", tg[0])
            on_flag = fa.configs[1]["flags"]["-fa"]
            off_flag = fa.configs[0]["flags"]["-fa"]
            if c.significant and c.ratio > 1:
                flags["-fa"] = on_flag
                why.append(f"-fa {on_flag}: tg {c.ratio:.3f}x of off, CI {c.ci_low:.3f}-{c.ci_high:.3f}")
            elif c.significant and c.ratio < 1:
                flags["-fa"] = off_flag
                why.append(f"-fa {off_flag}: on was {c.ratio:.3f}x of off, CI {c.ci_low:.3f}-{c.ci_high:.3f}")
            else:
                why.append(f"flash attention left at llama.cpp's default: {c.verdict}")
    return {"threads": int(threads.threads), "flags": flags, "why": why, "planned": sweep.planned}


def three_way(run, inp: Inputs, chosen: dict, sz: Sizes | None = None) -> Experiment:
    """The blueprint's command, llama.cpp's defaults and the runbook's choice, in one interleaved run."""
    sz = sz or sizes(run, inp)
    dt = cpu_plan(run, "bench", help_info=inp.help).threads  # nothing measured: llama-bench's default
    confs = [cfg(inp, "blueprint", inp.nproc, sz, note="-t $(nproc), spelled out"),
             cfg(inp, "defaults", dt, sz, note=f"no tuning flags; -t {dt} = llama-bench's own default"),
             cfg(inp, "runbook", chosen["threads"], sz, flags=chosen.get("flags"), note="; ".join(chosen.get("why", [])))]
    notes = []
    argvs = [tuple(c.argv()) for c in confs]
    if len(set(argvs)) < len(argvs):
        same = [c.label for c in confs if argvs.count(tuple(c.argv())) > 1]
        notes.append(f"{', '.join(same)} are the same command on this machine (nproc={inp.nproc}, llama-bench default "
                     f"threads={dt}); measuring them separately shows the noise floor (their ratio should be ~1)")
    return experiment(run, "three_way", "Three configurations: blueprint vs llama.cpp defaults vs runbook",
                      confs, sz.rounds, inp.help, baseline="blueprint", notes=notes)


def native_vs_generic(run, inp: Inputs, threads: int, sz: Sizes | None = None) -> Experiment | None:
    sz = sz or sizes(run, inp)
    if not inp.generic_bench:
        return None
    # the generic build's prompt processing is ~6x slower: a shorter prompt and 3 repetitions keep
    # this comparison to ~2 minutes on 2 cores
    p = [min(sz.prompt[0], 128)]
    r = min(sz.reps, 3)
    confs = [cfg(inp, "generic x86-64", threads, sz, bench=inp.generic_bench, prompt=p, reps=r),
             cfg(inp, "native", threads, sz, prompt=p, reps=r)]
    return experiment(run, "native_vs_generic", f"-march=native build vs generic x86-64 build (t={threads})",
                      confs, sz.rounds, inp.help, baseline="generic x86-64")


def quant_ab(run, inp: Inputs, threads: int, sz: Sizes | None = None, synthetic: bool = True) -> Experiment | None:
    """Q4_K_M vs Q5_K_M: on the SYNTHETIC model (K-quants apply) or on SmolLM2 (they mostly cannot)."""
    sz = sz or sizes(run, inp)
    src = inp.synthetic if synthetic else inp.quantized
    if "Q4_K_M" not in src or "Q5_K_M" not in src:
        return None
    p, g, r = (sz.syn_prompt, sz.syn_gen, sz.syn_reps) if synthetic else (sz.prompt[:1], sz.gen, sz.reps)
    confs = [cfg(inp, "Q4_K_M", threads, sz, model=src["Q4_K_M"], prompt=p, gen=g, reps=r),
             cfg(inp, "Q5_K_M", threads, sz, model=src["Q5_K_M"], prompt=p, gen=g, reps=r)]
    if synthetic:
        notes = ["SYNTHETIC model (random weights): its speed is real, its text is noise; widths are multiples of "
                 "256 so K-quants apply to every matrix"]
        title = f"Q4_K_M vs Q5_K_M on the SYNTHETIC model (t={threads})"
    else:
        notes = ["SmolLM2 is 576 wide (not a multiple of 256): most tensors fall back to q5_0/q5_1, so this is "
                 "not the blueprint's Q4_K_M vs Q5_K_M and cannot test its '~15% slower' claim"]
        title = f"Q4_K_M vs Q5_K_M on SmolLM2 (mostly q5_0 vs q5_1 fallbacks; t={threads})"
    ex = experiment(run, "quant_synthetic" if synthetic else "quant_smollm2", title, confs, sz.rounds, inp.help,
                    baseline="Q4_K_M", notes=notes)
    ex.extra["file_size"] = {q: src[q].get("file_size") for q in ("Q4_K_M", "Q5_K_M")}
    return ex


def project_benchmark(params_file, quick: bool = False, run_dir=None):
    """``aios bench``: choose the runbook's configuration (sweep + flash-attn A/B), then measure the
    three configurations interleaved. Records into its own run folder; returns (run, three, chosen)."""
    from ..context import open_run
    from ..params import load_params
    from ..core.records import new_run_id, run_dir_for

    params = load_params(params_file)
    if quick:
        params.runtime.bench.quick = True
    d = run_dir or run_dir_for(params.machine_name(), new_run_id(False, "bench"))
    run = open_run(params, run_dir=d, plan=False, phase="05")
    inp = inputs(run)
    sz = sizes(run, inp)
    sweep = thread_sweep(run, inp, sz)
    run.record("thread_sweep", sweep.to_dict())
    threads = cpu_plan(run, "bench", measured=sweep.extra.get("best"), help_info=inp.help)
    fa = flash_attn_ab(run, inp, threads.threads, sz)
    run.record("flash_attn", fa.to_dict())
    chosen = choose(sweep, fa, threads)
    run.record("chosen", chosen)
    three = three_way(run, inp, chosen, sz)
    run.record("three_way", three.to_dict())
    return run, three, chosen
