"""Phase 5's proof: Synapse against the llama.cpp a user would otherwise have, on this machine.

**Stock** is what a user has without Synapse: llama.cpp built the way its releases ship it for
CPUs (every CPU variant, the best one chosen at start-up; when that build dies here, the same
build with the runtime workaround it needs, labelled as such), run with llama-bench's and
llama-server's own defaults, on the host as found (its THP mode, default scheduling, no pinning).

**Synapse** is the verified native build, run with the knobs this machine rewards, on the host with
Synapse's settings applied live (and restored afterwards).

The knobs are candidates, each checked against the built binary's ``--help`` and the host's
ability to change it; those that cannot apply here are listed with the reason. Each knob is
measured alone against the native build as found, and left out of the full set; the chosen
configuration keeps only the knobs whose ratio's CI lies above 1. Then four configurations run in
the same interleaved rounds, so the gain decomposes: stock -> native build (the build) -> chosen
flags (the runtime) -> Synapse's process and host settings (the system). Rounds continue until the
headline ratio is known to the target precision or the budget ends.

Every number in the prose this module writes is taken from the experiments it returns.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..measure import stats
from ..measure.experiment import Experiment
from ..measure.llama_bench import BenchConfig
from ..measure.sequential import Configuration, measure
from ..settings.live import LiveState, ProcessSettings, read_process_settings


# ---- what is measured ------------------------------------------------------------------------------
@dataclass
class Side:
    """A build as one side of the comparison uses it."""

    label: str
    bench: str  # llama-bench path
    server: str | None  # llama-server path (None: not built)
    flags: dict[str, str] = field(default_factory=dict)  # flags this build needs to run here at all
    note: str = ""


@dataclass(frozen=True)
class Knob:
    """One setting Synapse may change, of one of three kinds: a llama.cpp flag, how the process is
    started, or a live host setting."""

    name: str
    kind: str  # flag | process | system
    flags: tuple[tuple[str, str], ...] = ()
    process: ProcessSettings | None = None
    system: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def shown(self) -> str:
        if self.kind == "flag":
            return " ".join(f"{k} {v}" for k, v in self.flags)
        if self.kind == "process":
            return self.process.shown() if self.process else ""
        return " ".join(f"{k}={v}" for k, v in self.system)


def candidate_knobs(nproc: int, threads: int, bench_default_threads: int | None) -> list[Knob]:
    """The knobs worth measuring on a CPU box (the Phase 6 unit can carry each of them)."""
    out = []
    if threads != (bench_default_threads or nproc):
        out.append(Knob(f"threads {threads}", "flag", (("-t", str(threads)),),
                        why="the thread sweep's best count differs from llama.cpp's default"))
    out += [
        Knob("poll 0", "flag", (("--poll", "0"),),
             why="llama.cpp's threads spin (poll 50) between work items; on few cores spinning competes with work"),
        Knob("prio 2", "flag", (("--prio", "2"),), why="high process/thread priority"),
        Knob("mlock", "flag", (("-lm", "mmap+mlock"),), why="keep the weights resident (the blueprint's --mlock)"),
        Knob("strict CPU placement", "flag", (("--cpu-strict", "1"),),
             why="one thread per CPU, pinned, instead of the scheduler's placement"),
        Knob("SCHED_BATCH, nice -5", "process", process=ProcessSettings("batch", -5),
             why="how the Phase 6 unit starts llama-server (CPUSchedulingPolicy=batch, Nice=-5)"),
        Knob("THP always", "system", system=(("thp", "always"),),
             why="transparent huge pages for all anonymous memory (the KV cache, compute buffers)"),
    ]
    return out


def usable_knobs(knobs: Sequence[Knob], help_flags: set[str], unavailable: dict[str, str],
                 runner=None) -> tuple[list[Knob], list[dict]]:
    """Split candidates into those this binary and host can apply and those they cannot (with why)."""
    ok, left = [], []
    for k in knobs:
        missing = [f for f, _ in k.flags if help_flags and f not in help_flags]
        if missing:
            left.append({"knob": k.name, "why": f"this llama-bench has no {', '.join(missing)} (see its --help)"})
            continue
        host = [unavailable[s] for s, _ in k.system if s in unavailable]
        if host:
            left.append({"knob": k.name, "why": host[0]})
            continue
        if k.kind == "process" and runner is not None and not runner.plan:
            got = read_process_settings(runner, k.process)
            if not got.get("matches"):
                left.append({"knob": k.name, "why": f"a process started with it gets {got or 'nothing'}: "
                                                    "this host does not allow it"})
                continue
        ok.append(k)
    return ok, left


def combine(knobs: Sequence[Knob]) -> tuple[dict[str, str], ProcessSettings, dict[str, str]]:
    """Flags, process settings and host settings of a set of knobs together."""
    flags: dict[str, str] = {}
    policy = nice = cpus = None
    system: dict[str, str] = {}
    for k in knobs:
        flags.update(dict(k.flags))
        system.update(dict(k.system))
        if k.process:
            policy = k.process.policy or policy
            nice = k.process.nice if k.process.nice is not None else nice
            cpus = k.process.cpus or cpus
    return flags, ProcessSettings(policy, nice, cpus), system


def config(label: str, side: Side, model: str, threads: int, knobs: Sequence[Knob], *, prompt: list[int],
           gen: list[int], reps: int, note: str = "") -> Configuration:
    flags, proc, system = combine(knobs)
    if "-t" in flags:
        threads = int(flags.pop("-t"))
    bc = BenchConfig(label, side.bench, model, threads, prompt=list(prompt), gen=list(gen), reps=reps,
                     flags={**side.flags, **flags}, note=note or side.note)
    return Configuration(label, bc, proc, system, note or side.note)


# ---- the experiments ---------------------------------------------------------------------------------
@dataclass
class Plan:
    """Sizes and budgets (from ``runtime.bench``), the model and the two sides."""

    stock: Side
    native: Side
    model: str  # the memory-bound model (path)
    model_label: str
    threads: int  # the thread count the sweep chose
    default_threads: int
    prompt: int = 128
    gen: int = 64
    screen_gen: int = 32
    reps: int = 1
    target: float = 0.02
    budget_s: float = 600.0
    screen_rounds: int = 3
    band: float = stats.EQUIVALENCE_BAND


def knob_screen(run, plan: Plan, knobs: Sequence[Knob], live: LiveState | None, help_info: dict | None = None,
                budget_s: float | None = None) -> Experiment:
    """Each knob alone on the native build as found, and the full set with each knob left out."""
    base_label = "native, as found"
    full_label = "native, all knobs"
    mk = lambda label, ks: config(label, plan.native, plan.model, plan.default_threads, ks,  # noqa: E731
                                  prompt=[], gen=[plan.screen_gen], reps=plan.reps)
    confs = [mk(base_label, [])]
    confs += [mk(f"+ {k.name}", [k]) for k in knobs]
    if len(knobs) > 1:
        confs.append(mk(full_label, knobs))
        confs += [mk(f"all - {k.name}", [x for x in knobs if x is not k]) for k in knobs]
    ex = measure(run, "knob_screen", f"Each knob alone and left out (tg{plan.screen_gen}, {plan.model_label})",
                 confs, primary=None, min_rounds=plan.screen_rounds, max_rounds=plan.screen_rounds,
                 budget_s=budget_s or plan.budget_s, help_info=help_info, live=live, baseline=base_label)
    ex.extra["knobs"] = [asdict(k) for k in knobs]
    return ex


def choose_knobs(ex: Experiment, knobs: Sequence[Knob], band: float = stats.EQUIVALENCE_BAND) -> dict:
    """Keep a knob only when its ratio alone against the build as found has a CI above 1."""
    test = next((t for t in ex.tests() if t.startswith("tg")), None)
    rows, keep = [], []
    for k in knobs:
        alone = ex.paired("native, as found", f"+ {k.name}", test, band=band) if test else None
        left_out = (ex.paired("native, all knobs", f"all - {k.name}", test, band=band)
                    if test and "native, all knobs" in ex.labels else None)
        verdict = alone.verdict if alone else "planned"
        if verdict == "higher":
            keep.append(k)
        rows.append({"knob": k.name, "kind": k.kind, "what": k.shown(), "why": k.why,
                     "alone": alone.as_dict() if alone else None, "left_out": left_out.as_dict() if left_out else None,
                     "verdict": {"higher": "helps: kept", "lower": "hurts here: left out",
                                 "equivalent": "no difference here (within the band): left out",
                                 "not shown": "not shown (CI too wide): left out", "no data": "no data",
                                 "planned": "planned"}[verdict]})
    return {"test": test, "knobs": rows, "kept": [k.name for k in keep],
            "kept_knobs": [asdict(k) for k in keep]}


def decomposition(run, plan: Plan, kept: Sequence[Knob], live: LiveState | None, help_info: dict | None = None,
                  budget_s: float | None = None) -> Experiment:
    """stock -> native build -> + chosen flags -> + process and host settings (= Synapse), in the same
    rounds, until the Synapse/stock ratio on token generation is known to ``plan.target``."""
    flags_only = [k for k in kept if k.kind == "flag"]
    sizes = dict(prompt=[plan.prompt], gen=[plan.gen], reps=plan.reps)
    confs = [config("stock", plan.stock, plan.model, plan.default_threads, [], note=plan.stock.note, **sizes),
             config("native build", plan.native, plan.model, plan.default_threads, [], **sizes),
             config("native + flags", plan.native, plan.model, plan.default_threads, flags_only, **sizes),
             config("Synapse", plan.native, plan.model, plan.default_threads, kept, **sizes)]
    ex = measure(run, "decomposition", f"Synapse vs stock, decomposed ({plan.model_label})", confs,
                 primary=("stock", "Synapse", f"tg{plan.gen}"), target=plan.target, budget_s=budget_s or plan.budget_s,
                 help_info=help_info, live=live, baseline="stock")
    return ex


#: the decomposition's steps: (from, to, what the step is); the last is the whole gain
STEPS = [("stock", "native build", "the build"),
         ("stock x86-64-v3", "native build", "native build over the stock build's x86-64-v3 (AVX2) module"),
         ("native build", "native + flags", "runtime flags"),
         ("native + flags", "Synapse", "process and host settings"), ("stock", "Synapse", "Synapse vs stock")]


def decomposition_table(ex: Experiment, band: float = stats.EQUIVALENCE_BAND):
    import pandas as pd

    rows = []
    for a, b, what in STEPS:
        if a not in ex.labels or b not in ex.labels:
            continue
        for t in ex.tests():
            pr = ex.paired(a, b, t, band=band)
            rows.append({"step": what, "from": a, "to": b, "test": t, "ratio": pr.ratio, "CI low": pr.ci_low,
                         "CI high": pr.ci_high, "rounds": pr.rounds, "verdict": pr.verdict})
    return pd.DataFrame(rows)


# ---- the words ---------------------------------------------------------------------------------------
def _fmt(pr: dict | stats.PairedRatio | None) -> str:
    if pr is None:
        return "n/a"
    d = pr.as_dict() if hasattr(pr, "as_dict") else pr
    if d.get("rounds", 0) < 2 or d.get("ci_low") != d.get("ci_low"):
        return f"{d.get('ratio', float('nan')):.2f}x (too few rounds for a CI)"
    return f"{d['ratio']:.2f}x [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"


def verdict_line(decomp: dict, served: dict | None = None) -> str:
    """``Synapse vs stock on this machine: tg x.xx [CI], pp x.xx [CI], p99 inter-token x.xx [CI]``,
    from the recorded experiments (dicts as results.json holds them)."""
    ex = Experiment.from_dict(decomp)
    base = ex.baseline or "stock"
    who = "stock" if base == "stock" else "llama.cpp's defaults on the verified build"
    if ex.planned:
        return f"Synapse vs {who}: planned, not measured"
    tg = next((t for t in ex.tests() if t.startswith("tg")), None)
    pp = next((t for t in ex.tests() if t.startswith("pp")), None)
    parts = []
    if tg:
        parts.append(f"{tg} {_fmt(ex.paired(base, 'Synapse', tg))}")
    if pp:
        parts.append(f"{pp} {_fmt(ex.paired(base, 'Synapse', pp))}")
    if served and served.get("ratios", {}).get("itl_p99_ms"):
        parts.append(f"p99 inter-token {_fmt(served['ratios']['itl_p99_ms'])} (lower is better)")
    return f"Synapse vs {who} on this machine: " + ", ".join(parts)


def findings(rec: dict) -> list[str]:
    """Sentences for the top of notebook 05, every number and comparative word from ``rec`` (the
    phase's recorded ``proof``)."""
    out = []
    if rec.get("stock_note"):
        out.append(rec["stock_note"])
    d = rec.get("decomposition")
    if d:
        out.append(verdict_line(d, rec.get("served")))
        ex = Experiment.from_dict(d)
        if not ex.planned:
            tg = next((t for t in ex.tests() if t.startswith("tg")), None)
            for a, b, what in STEPS[:-1]:
                if a not in ex.labels or b not in ex.labels:
                    continue
                pr = ex.paired(a, b, tg) if tg else None
                if pr is None or pr.verdict == "no data":
                    continue
                word = {"higher": "gains", "lower": "loses", "equivalent": "changes nothing that matters",
                        "not shown": "shows no difference the measurement could resolve"}[pr.verdict]
                out.append(f"{what.capitalize()}: {word} on {tg} ({_fmt(pr)}, {pr.rounds} rounds).")
            stop = ex.extra.get("stop_sentence")
            if stop:
                out.append(f"The headline rounds {stop}.")
    ch = rec.get("choice")
    if ch and ch.get("knobs") and not all(r["verdict"] == "planned" for r in ch["knobs"]):
        kept = ch.get("kept") or []
        nothing = [r["knob"] for r in ch["knobs"] if r["verdict"].startswith("no difference")]
        hurt = [r["knob"] for r in ch["knobs"] if r["verdict"].startswith("hurts")]
        unclear = [r["knob"] for r in ch["knobs"] if r["verdict"].startswith("not shown")]
        out.append("Knobs kept (their CI alone lies above 1): " + (", ".join(kept) if kept else "none") + ".")
        if nothing:
            out.append("No difference here (CI inside the equivalence band): " + ", ".join(nothing) + ".")
        if hurt:
            out.append("Hurt here: " + ", ".join(hurt) + ".")
        if unclear:
            out.append("Not resolved by this budget (CI too wide to call them equal): " + ", ".join(unclear) + ".")
    for r in rec.get("left_out") or []:
        out.append(f"Not measured here: {r['knob']} ({r['why']}).")
    return out


# ---- the whole proof, within a time budget -------------------------------------------------------------
#: shares of the measurement budget, in the order the steps run (time a step does not use passes on)
SHARES = {"sweep": 0.08, "screen": 0.27, "decomposition": 0.35, "served": 0.15, "quant": 0.15}

#: llama-bench flag -> the llama-server spelling (the rest are spelled the same)
SERVER_SPELLING = {"--repack": lambda v: ["--no-repack"] if str(v) == "0" else []}


def server_flags(flags: dict[str, str]) -> dict[str, str | None]:
    """The llama-server form of llama-bench flags (``--repack 0`` is ``--no-repack`` there)."""
    out: dict[str, str | None] = {}
    for k, v in flags.items():
        if k in SERVER_SPELLING:
            for f in SERVER_SPELLING[k](v):
                out[f] = None
        else:
            out[k] = v
    return out


@dataclass
class Budget:
    total_s: float
    started: float = field(default_factory=lambda: __import__("time").monotonic())
    used: dict[str, float] = field(default_factory=dict)

    def left(self) -> float:
        import time

        return max(0.0, self.total_s - (time.monotonic() - self.started))

    def share(self, step: str) -> float:
        """This step's share of what is left, by the shares of the steps not yet run."""
        rest = [s for s in SHARES if s not in self.used]
        total = sum(SHARES[s] for s in rest) or 1.0
        return max(1.0, self.left() * SHARES.get(step, 0.1) / total)

    def done(self, step: str, seconds: float) -> None:
        self.used[step] = round(seconds, 1)


def sides(run, inp) -> tuple[Side | None, Side, Side | None, str]:
    """(stock, native, stock's x86-64-v3 module or None, a sentence on what stock is here)."""
    from ..runtime import llama

    native = Side("native", inp.bench, inp.server, note="the verified native build")
    st = inp.stock or {}
    b = st.get("build") or {}
    if not b:
        return None, native, None, ("The stock build was not built (runtime.llama.compare_stock: false): the "
                                    "comparison starts from llama.cpp's defaults on the verified build.")
    bin_dir = Path(b["bin_dir"])
    bench, server = str(bin_dir / "llama-bench"), str(bin_dir / "llama-server")
    v3 = None
    if not run.plan and (bin_dir / "libggml-cpu-haswell.so").exists() and st.get("variant") != "haswell":
        lb = llama.LlamaBuild(bin_dir=bin_dir, label="release", source={}, cmake_options={}, compiler="")
        d = llama.variant_dir(run, lb, "haswell")
        v3 = Side("stock, x86-64-v3 module", str(d / "llama-bench"), str(d / "llama-server"),
                  note="the stock build restricted to its haswell module (AVX2, FMA, F16C, BMI2: x86-64-v3)")
    if st.get("runs") is False:
        wa = st.get("workaround") or {}
        if wa.get("ok"):
            return (Side("stock", bench, server, {"--repack": "0"},
                         note="the stock build with --repack 0, the runtime workaround it needs to run here"), native, v3,
                    f"{st.get('finding')} So stock is measured here with that workaround, labelled as such.")
        return None, native, v3, (f"{st.get('finding')} Stock cannot be measured on this machine; the comparison "
                                  "starts from llama.cpp's defaults on the verified build.")
    variant = st.get("variant")
    if st.get("runs") is None:
        return (Side("stock", bench, server, note="the stock build (planned)"), native, v3,
                "The stock build (llama.cpp as its releases ship it) is planned: it is verified when built.")
    return (Side("stock", bench, server, note=f"the stock build ({variant or 'its best'} module)"), native, v3,
            f"llama.cpp as its releases ship it runs here ({variant or 'best'} module); it is the baseline.")


@dataclass
class Proof:
    """Everything phase 05's proof measured (or planned), as recorded in results.json ``05/proof``."""

    record: dict

    @property
    def planned(self) -> bool:
        return bool(self.record.get("planned"))

    def findings(self) -> list[str]:
        return findings(self.record)

    def to_dict(self) -> dict:
        return self.record

    def experiment(self, name: str) -> Experiment | None:
        d = self.record.get(name)
        return Experiment.from_dict(d) if d else None

    def _repr_markdown_(self) -> str:
        head = "**Synapse against stock** (every number below comes from this run's measurements)"
        return "\n".join([head, ""] + [f"- {f}" for f in self.findings()])


def run_all(run, inp, *, say=print) -> Proof:
    """Phase 05's proof: thread sweep, knob screen, the decomposed headline with its stopping rule,
    the served comparison, the quantisation table and the roofline, within ``runtime.bench.budget_s``.
    Live host settings are restored when it ends, whatever ends it."""
    import time

    from . import roofline, served as served_mod
    from ..runtime.cpus import cpu_plan

    b = run.params.runtime.bench
    quick = b.quick
    budget = Budget(float(b.budget_s))
    stock, native, v3, stock_note = sides(run, inp)
    mm = inp.memory_model or inp.model
    model_path = str(mm["path"])
    label = f"SYNTHETIC {inp.headline}" if inp.memory_model else Path(model_path).name
    default_t = cpu_plan(run, "bench", help_info=inp.help).bench_default or inp.nproc
    rec: dict[str, Any] = {"planned": run.plan or inp.planned, "stock_note": stock_note, "model": {
        "path": model_path, "label": label, "file_size": mm.get("file_size"), "llc_bytes": inp.llc_bytes,
        "times_llc": inp.model_over_llc()}, "sides": {"stock": asdict(stock) if stock else None,
                                                       "native": asdict(native), "x86_64_v3": asdict(v3) if v3 else None},
        "budget_s": b.budget_s, "target": b.target_half_width, "band": b.equivalence_band}
    help_flags = set((inp.help or {}).get("flags") or [])
    with LiveState(run) as live:
        try:
            # 1. thread count
            t0 = time.monotonic()
            plan = Plan(stock or native, native, model_path, label, default_t, default_t, prompt=b.proof_prompt,
                        gen=b.proof_gen, screen_gen=b.screen_gen, target=b.target_half_width,
                        budget_s=budget.share("sweep"), band=b.equivalence_band,
                        screen_rounds=2 if quick else 3)
            sweep_counts = cpu_plan(run, "bench", help_info=inp.help).sweep
            sweep_confs = [config(f"t={t}", native, model_path, t, [], prompt=[], gen=[b.screen_gen], reps=1)
                           for t in sweep_counts]
            sweep = measure(run, "thread_sweep", f"Threads for token generation ({label})", sweep_confs,
                            min_rounds=2, max_rounds=2 if quick else 3, budget_s=plan.budget_s, help_info=inp.help,
                            live=live, baseline=f"t={default_t}")
            best = _best_threads(sweep, f"t={default_t}", b.equivalence_band) or default_t
            sweep.extra.update(threads=list(sweep_counts), best=best, default=default_t)
            rec["sweep"] = sweep.to_dict()
            budget.done("sweep", time.monotonic() - t0)

            # 2. knobs this binary and host can apply; each alone and left out
            t0 = time.monotonic()
            cands = candidate_knobs(inp.nproc, best, default_t)
            knobs, left = usable_knobs(cands, help_flags, live.unavailable, run.runner)
            left += [{"knob": name, "why": why} for name, why in _host_cannot(run, live).items()]
            rec["knobs"], rec["left_out"] = [asdict(k) for k in knobs], left
            plan.budget_s = budget.share("screen")
            screen = knob_screen(run, plan, knobs, live, inp.help, budget_s=plan.budget_s)
            rec["screen"] = screen.to_dict()
            choice = choose_knobs(screen, knobs, b.equivalence_band)
            kept = [k for k in knobs if k.name in choice["kept"]]
            rec["choice"] = choice
            budget.done("screen", time.monotonic() - t0)

            # 3. the headline: stock -> build -> flags -> system, until the ratio is known
            t0 = time.monotonic()
            plan.budget_s = budget.share("decomposition")
            ex = decomposition_with(run, plan, stock, v3, kept, live, inp.help)
            rec["decomposition"] = ex.to_dict()
            budget.done("decomposition", time.monotonic() - t0)

            # 4. served through llama-server
            t0 = time.monotonic()
            flags, proc, system = combine(kept)
            threads = int(flags.get("-t", default_t))
            syn_side = served_mod.ServerSide("Synapse", native.server, server_flags(flags), threads, proc, system)
            base = stock or native
            st_side = served_mod.ServerSide("stock" if stock else "native, as found", base.server,
                                            server_flags(base.flags), None, note=base.note)
            rec["served"] = served_mod.compare(run, st_side, syn_side, model_path, threads=default_t,
                                               rounds=2 if quick else 8, min_rounds=2 if quick else 3,
                                               requests=b.served_requests,
                                               n_predict=8 if quick else b.served_tokens, live=live,
                                               budget_s=budget.share("served"), say=say)
            budget.done("served", time.monotonic() - t0)

            # 5. quantisations of the SYNTHETIC model with Synapse's configuration
            t0 = time.monotonic()
            rec["quant"] = quant_table_experiment(run, inp, native, kept, b, live, budget.share("quant")).to_dict() \
                if len(inp.synthetic) > 1 else None
            budget.done("quant", time.monotonic() - t0)
        finally:
            live.restore()
            rec["live"] = live.record()

    # 6. memory bandwidth with arrays several times the last-level cache, and the roofline
    mib = max(256, int(4 * (inp.llc_bytes or 0) / 2**20) + 1)
    bw = [roofline.measure_bandwidth(run, [default_t], mib=mib, reps=3) for _ in range(1 if quick else 3)]
    rec["bandwidth"] = {"mib_per_array": mib, "invocations": bw}
    rec["roofline"] = roofline_fraction(rec)
    rec["budget"] = {"total_s": b.budget_s, "used_s": budget.used}
    rec["chosen"] = chosen_for_service(rec, kept, default_t)
    rec["findings"] = findings(rec)
    return Proof(rec)


def _best_threads(ex: Experiment, default_label: str, band: float) -> int | None:
    """The thread count whose tg is higher than the default's with a CI above 1 and the best mean;
    the default when none is."""
    if ex.planned:
        return None
    test = next((t for t in ex.tests() if t.startswith("tg")), None)
    best, best_ratio = None, 1.0
    for c in ex.configs:
        if c["label"] == default_label:
            continue
        pr = ex.paired(default_label, c["label"], test, band=band)
        if pr.verdict == "higher" and pr.ratio > best_ratio:
            best, best_ratio = c["threads"], pr.ratio
    return best


def _host_cannot(run, live: LiveState) -> dict[str, str]:
    """Settings Synapse would change that this host does not offer, listed instead of dropped."""
    from ..facts import FACTS, gather

    out = {f"live setting {k}": v for k, v in live.unavailable.items()}
    numa = gather(run.runner, FACTS["numa"]) if not run.plan else {}
    if numa and (numa.get("count") or 1) <= 1:
        out["--numa distribute"] = "one NUMA node: nothing to distribute"
    out["reserved huge pages (vm.nr_hugepages)"] = ("llama.cpp maps weights and buffers without hugetlbfs, so "
                                                     "reserved pages would sit unused; THP is the knob that reaches it")
    return out


def decomposition_with(run, plan: Plan, stock: Side | None, v3: Side | None, kept: Sequence[Knob],
                       live: LiveState | None, help_info: dict | None) -> Experiment:
    """The decomposed headline; without a runnable stock build it starts at the native build, and the
    stock build's x86-64-v3 module joins the same rounds where it exists."""
    flags_only = [k for k in kept if k.kind == "flag"]
    sizes = dict(prompt=[plan.prompt], gen=[plan.gen], reps=plan.reps)
    confs = []
    if stock is not None:
        confs.append(config("stock", stock, plan.model, plan.default_threads, [], note=stock.note, **sizes))
    if v3 is not None:
        confs.append(config("stock x86-64-v3", v3, plan.model, plan.default_threads, [], note=v3.note, **sizes))
    confs += [config("native build", plan.native, plan.model, plan.default_threads, [], **sizes),
              config("native + flags", plan.native, plan.model, plan.default_threads, flags_only, **sizes),
              config("Synapse", plan.native, plan.model, plan.default_threads, kept, **sizes)]
    base = "stock" if stock is not None else "native build"
    return measure(run, "decomposition", f"Synapse vs {base}, decomposed ({plan.model_label})", confs,
                   primary=(base, "Synapse", f"tg{plan.gen}"), target=plan.target, budget_s=plan.budget_s,
                   help_info=help_info, live=live, baseline=base)


def quant_table_experiment(run, inp, native: Side, kept: Sequence[Knob], b, live, budget_s: float) -> Experiment:
    """Every SYNTHETIC quantisation with Synapse's configuration, pp and tg, in the same rounds."""
    gen = 8 if b.quick else 128  # long generation: the blueprint's "Q5_K_M ~15% slower" is about tg128
    confs = [config(q, native, str(m["path"]), inp.nproc, kept, prompt=[b.proof_prompt], gen=[gen], reps=1)
             for q, m in inp.synthetic.items()]
    ex = measure(run, "quant_synthetic", f"Quantisations of the SYNTHETIC model (tg{gen})", confs, min_rounds=2,
                 max_rounds=2 if b.quick else 5, budget_s=budget_s, live=live,
                 baseline=inp.headline if inp.headline in inp.synthetic else None)
    ex.extra["file_size"] = {q: m.get("file_size") for q, m in inp.synthetic.items()}
    return ex


def quant_rows(rec: dict, band: float = stats.EQUIVALENCE_BAND) -> list[dict]:
    """File size, pp and tg of each quantisation, and its ratio to the headline type with a CI."""
    q = rec.get("quant")
    if not q:
        return []
    ex = Experiment.from_dict(q)
    rows = []
    for label in ex.labels:
        row = {"quantisation": label, "file GB": (ex.extra.get("file_size", {}).get(label) or 0) / 1e9}
        for t in ex.tests():
            means = ex.round_means(label, t)
            row[f"{t} t/s"] = sum(means.values()) / len(means) if means else None
            if ex.baseline and label != ex.baseline:
                pr = ex.paired(ex.baseline, label, t, band=band)
                row[f"{t} vs {ex.baseline}"] = _fmt(pr)
        rows.append(row)
    return rows


def roofline_fraction(rec: dict) -> dict | None:
    """Synapse's token generation on the memory-bound model as a fraction of the measured read
    bandwidth: tg x model bytes / bandwidth, with the CI of tg over rounds."""
    d = rec.get("decomposition")
    bw = [i.get("best", {}).get("read_gbs") for i in (rec.get("bandwidth") or {}).get("invocations", []) if i.get("best")]
    size = (rec.get("model") or {}).get("file_size")
    if not d or not bw or not size:
        return None
    ex = Experiment.from_dict(d)
    tg = next((t for t in ex.tests() if t.startswith("tg")), None)
    means = list(ex.round_means("Synapse", tg).values()) if tg else []
    if not means:
        return None
    s = stats.summarize(means)
    gbs = sum(bw) / len(bw)
    frac = lambda x: x * size / 1e9 / gbs  # noqa: E731
    out = {"test": tg, "tg_ts": s.mean, "bandwidth_gbs": gbs, "bandwidth_samples": bw, "bytes_per_token": size,
           "fraction": frac(s.mean), "ci_low": frac(s.ci_low) if s.n > 1 else None,
           "ci_high": frac(s.ci_high) if s.n > 1 else None, "rounds": s.n}
    out["verdict"] = ("memory-bound: each token streams the weights at most of the bandwidth the machine has"
                      if out["fraction"] >= 0.5 else
                      "overhead-bound: tokens take longer than streaming the weights would, so per-token work, "
                      "not memory, sets the pace")
    return out


def chosen_for_service(rec: dict, kept: Sequence[Knob], default_t: int) -> dict:
    """What phase 06's unit takes from the proof: threads, llama-server flags, and why."""
    flags, proc, system = combine(kept)
    threads = int(flags.pop("-t", default_t))
    return {"threads": threads, "server_flags": server_flags(flags), "process": asdict(proc), "system": system,
            "knobs": [k.name for k in kept], "planned": rec.get("planned", False),
            "why": [f"kept by the knob screen: {', '.join(k.name for k in kept) or 'nothing'}"]}


# ---- tables for the notebook (from the record only) ---------------------------------------------------
def knobs_table(rec: dict):
    """Every candidate: measured, or left out with the reason."""
    import pandas as pd

    rows = [{"knob": k["name"], "kind": k["kind"], "measured": "yes", "why it is a candidate / why not": k["why"]}
            for k in rec.get("knobs") or []]
    rows += [{"knob": r["knob"], "kind": "", "measured": "no", "why it is a candidate / why not": r["why"]}
             for r in rec.get("left_out") or []]
    return pd.DataFrame(rows, columns=["knob", "kind", "measured", "why it is a candidate / why not"])


def screen_table(rec: dict):
    """Each knob alone against the build as found, and the full set without it."""
    import pandas as pd

    rows = []
    for r in (rec.get("choice") or {}).get("knobs") or []:
        rows.append({"knob": r["knob"], "what": r["what"], "alone (vs as found)": _fmt(r["alone"]),
                     "left out (vs all knobs)": _fmt(r["left_out"]) if r.get("left_out") else "",
                     "decision": r["verdict"]})
    return pd.DataFrame(rows, columns=["knob", "what", "alone (vs as found)", "left out (vs all knobs)", "decision"])


def screen_rows(rec: dict) -> list[dict]:
    """The knob screen's ratios for :func:`aios_lib.benchmark.report.ratio_plot`."""
    out = []
    for r in (rec.get("choice") or {}).get("knobs") or []:
        if r.get("alone"):
            out.append({**r["alone"], "label": f"+ {r['knob']} (alone)"})
        if r.get("left_out"):
            out.append({**r["left_out"], "label": f"all - {r['knob']}"})
    return out


def decomposition_rows(rec: dict) -> list[dict]:
    """The decomposition's steps (token generation) for :func:`aios_lib.benchmark.report.ratio_plot`."""
    d = rec.get("decomposition")
    if not d:
        return []
    ex = Experiment.from_dict(d)
    if ex.planned:
        return []
    tg = next((t for t in ex.tests() if t.startswith("tg")), None)
    out = []
    for a, b, what in STEPS:
        if a in ex.labels and b in ex.labels and tg:
            out.append({**ex.paired(a, b, tg, band=rec.get("band", stats.EQUIVALENCE_BAND)).as_dict(),
                        "label": f"{what} ({tg})"})
    return out


def quant_table(rec: dict):
    import pandas as pd

    return pd.DataFrame(quant_rows(rec, rec.get("band", stats.EQUIVALENCE_BAND)))


def live_table(rec: dict):
    """Every live host setting applied and restored, in order (from the record)."""
    import pandas as pd

    live = rec.get("live") or {}
    return pd.DataFrame(live.get("changes") or [],
                        columns=["setting", "action", "requested", "before", "after", "ok", "for_config"])
