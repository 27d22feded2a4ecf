"""Phase 5: llama-bench with statistics, interleaved comparisons and the machine's load recorded.

Every measurement is one ``llama-bench -o json`` invocation through ``runner.work`` (planned in
plan mode), with ``-t`` always explicit and every sample kept (``samples_ts``/``samples_ns``).
llama-bench does one warm-up run per test before its ``-r`` repetitions (unless
``--no-warmup``), so the samples never include a cold first run.

Comparisons run interleaved rounds: round 1 runs A then B, round 2 starts with B, and so on
(the order rotates each round so neither side always goes first); never all of A and then all
of B. Before and after each invocation the runner reads ``/proc/stat`` and ``/proc/loadavg``;
the CPU time other processes used during the run (busy time minus the benchmark's own CPU
time) marks a run as contended. On 2 cores another busy process cuts 2-thread results
several-fold, so the report shows contended runs instead of hiding them.

The data model (:class:`Experiment`) is pure: the reports re-create it from ``results.json``.
"""
from __future__ import annotations

import json
import math
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import stats

#: Cores' worth of CPU time other processes may use during a run before it counts as contended.
CONTENDED_CORES = 0.2

#: llama-bench JSON fields kept per row (besides the samples)
ROW_FIELDS = ("build_commit", "build_number", "cpu_info", "backends", "model_filename", "model_type", "model_size",
              "model_n_params", "n_batch", "n_ubatch", "n_threads", "poll", "type_k", "type_v", "flash_attn",
              "load_mode", "repack", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts",
              "stddev_ts", "samples_ns", "samples_ts")


# ---- llama-bench: flags, argv, JSON -------------------------------------------------------------
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
    v = help_info["defaults"].get("-t") or help_info["defaults"].get("--threads")
    return int(v) if v and v.isdigit() else None


def flash_attn_values(help_info: dict) -> tuple[str, str]:
    """How this llama-bench spells flash attention on/off (new: on|off|auto; old: 0|1)."""
    ch = help_info["choices"].get("-fa", "")
    return ("on", "off") if "on" in ch else ("1", "0")


def test_name(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    if n_gen == 0:
        name = f"pp{n_prompt}"
    elif n_prompt == 0:
        name = f"tg{n_gen}"
    else:
        name = f"pp{n_prompt}+tg{n_gen}"
    return name + (f"@d{n_depth}" if n_depth else "")


def parse_bench_json(text: str) -> list[dict]:
    """Rows of ``llama-bench -o json`` (or ``-o jsonl``), each with ``test`` and its samples."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        raw = json.loads(text)
    else:
        raw = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    rows = []
    for r in raw:
        row = {k: r.get(k) for k in ROW_FIELDS if k in r}
        row["samples_ts"] = [float(x) for x in r.get("samples_ts") or []]
        row["samples_ns"] = [int(x) for x in r.get("samples_ns") or []]
        row["test"] = test_name(int(r.get("n_prompt") or 0), int(r.get("n_gen") or 0), int(r.get("n_depth") or 0))
        rows.append(row)
    return rows


@dataclass
class BenchConfig:
    """One llama-bench configuration. ``flags`` are extra options, e.g. {"-fa": "on"}."""

    label: str
    bench: str  # path of llama-bench
    model: str  # path of the GGUF
    threads: int
    prompt: list[int] = field(default_factory=lambda: [512])
    gen: list[int] = field(default_factory=lambda: [128])
    reps: int = 5
    flags: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def argv(self) -> list[str]:
        a = [self.bench, "-m", self.model,
             "-p", ",".join(str(p) for p in self.prompt) or "0",
             "-n", ",".join(str(n) for n in self.gen) or "0",
             "-r", str(self.reps), "-t", str(self.threads)]
        for k, v in self.flags.items():
            a += [k, str(v)]
        return a + ["-o", "json"]

    def shown(self) -> str:
        """The command as a person would type it (binary and model by file name)."""
        a = self.argv()
        a[0], a[2] = Path(a[0]).name, Path(a[2]).name
        return " ".join(a)


def check_flags(cfg: BenchConfig, help_info: dict | None) -> None:
    """Refuse a flag the built llama-bench does not know (e.g. ``-mmp``, gone in current llama.cpp)."""
    if not help_info or not help_info.get("flags"):
        return
    used = [a for a in cfg.argv()[1:] if a.startswith("-") and not re.match(r"^-\d", a)]
    unknown = [f for f in used if f not in help_info["flags"]]
    if unknown:
        raise ValueError(f"llama-bench ({cfg.bench}) does not accept {', '.join(unknown)}; "
                         "check `llama-bench --help` (e.g. -mmp became -lm/--load-mode)")


# ---- machine load ---------------------------------------------------------------------------
def parse_proc_stat(text: str) -> dict:
    """The aggregate ``cpu`` line of /proc/stat (jiffies) and /proc/loadavg if present."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = [int(x) for x in parts[1:]] + [0] * 10
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            out.update(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal,
                       total=sum(v[:8]))
        elif parts and parts[0].startswith("cpu") and parts[0][3:].isdigit():
            out["ncpu"] = out.get("ncpu", 0) + 1
        elif len(parts) == 5 and "/" in parts[3] and re.match(r"^\d+\.\d+$", parts[0]):
            out["loadavg"] = [float(parts[0]), float(parts[1]), float(parts[2])]
            out["running"] = int(parts[3].split("/")[0])
    return out


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def load_snapshot(runner) -> dict:
    """/proc/stat + /proc/loadavg read through the runner (a probe: runs in plan mode too)."""
    r = runner.probe(["cat", "/proc/stat", "/proc/loadavg"], quiet=True, check=False)
    snap = parse_proc_stat(r.stdout)
    snap.update(time=time.time(), children_cpu=_children_cpu())
    return snap


def load_during(before: dict, after: dict, hz: int | None = None) -> dict:
    """What other processes used while the benchmark ran, in cores (1.0 = one busy core)."""
    hz = hz or os.sysconf("SC_CLK_TCK")
    wall = max(after["time"] - before["time"], 1e-6)
    busy = (after.get("busy", 0) - before.get("busy", 0)) / hz
    own = after["children_cpu"] - before["children_cpu"]
    steal = (after.get("steal", 0) - before.get("steal", 0)) / hz
    others = max(busy - own, 0.0) / wall
    return {"wall_s": round(wall, 2), "own_cores": round(own / wall, 3), "others_cores": round(others, 3),
            "steal_cores": round(steal / wall, 3), "loadavg_before": before.get("loadavg"),
            "loadavg_after": after.get("loadavg"),
            "contended": bool(others > CONTENDED_CORES or steal / wall > CONTENDED_CORES)}


# ---- running --------------------------------------------------------------------------------
def run_config(run, cfg: BenchConfig, round_no: int = 0, help_info: dict | None = None,
               timeout: float = 3600) -> dict:
    """One llama-bench invocation; returns its record (rows with samples, load, command)."""
    check_flags(cfg, help_info)
    before = load_snapshot(run.runner)
    res = run.runner.work(cfg.argv(), note=f"bench {cfg.label} round {round_no + 1}", timeout=timeout, quiet=True)
    rec = {"label": cfg.label, "round": round_no, "command": res.cmdline, "shown": cfg.shown(),
           "planned": res.planned, "started": res.started, "seconds": round(res.duration, 2), "rows": [],
           "load": None}
    if res.planned:
        return rec
    after = load_snapshot(run.runner)
    rec["load"] = load_during(before, after)
    rec["rows"] = parse_bench_json(res.stdout)
    return rec


def rotated(items: Sequence, k: int) -> list:
    k %= max(len(items), 1)
    return list(items[k:]) + list(items[:k])


def interleave(run, configs: Sequence[BenchConfig], rounds: int, help_info: dict | None = None,
               say=print) -> list[dict]:
    """Run each configuration once per round, rotating the order each round (A B | B A | ...)."""
    records = []
    for i in range(rounds):
        for cfg in rotated(configs, i):
            rec = run_config(run, cfg, i, help_info)
            records.append(rec)
            if say and not rec["planned"]:
                tests = ", ".join(f"{r['test']} {r['avg_ts']:.1f}" for r in rec["rows"])
                flag = " CONTENDED" if rec["load"]["contended"] else ""
                say(f"round {i + 1}/{rounds} {cfg.label}: {tests} t/s "
                    f"(others {rec['load']['others_cores']:.2f} cores){flag}")
            elif say:
                say(f"[plan] round {i + 1}/{rounds} {cfg.label}: {cfg.shown()}")
    return records


# ---- the data model ---------------------------------------------------------------------------
@dataclass
class Experiment:
    """Configurations measured in interleaved rounds, with every sample; pure data + statistics."""

    name: str
    title: str
    configs: list[dict]
    records: list[dict] = field(default_factory=list)
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    # -- access
    @property
    def planned(self) -> bool:
        return not self.records or all(r.get("planned") for r in self.records)

    @property
    def labels(self) -> list[str]:
        return [c["label"] for c in self.configs]

    def tests(self) -> list[str]:
        seen: list[str] = []
        for rec in self.records:
            for row in rec.get("rows", []):
                if row["test"] not in seen:
                    seen.append(row["test"])
        return seen

    def rounds(self, label: str, test: str, include_contended: bool = True) -> list[list[float]]:
        out = []
        for rec in self.records:
            if rec["label"] != label or rec.get("planned"):
                continue
            if not include_contended and (rec.get("load") or {}).get("contended"):
                continue
            for row in rec.get("rows", []):
                if row["test"] == test:
                    out.append(list(row["samples_ts"]))
        return out

    def round_means(self, label: str, test: str, include_contended: bool = True) -> dict[int, float]:
        """Round -> the mean of that round's invocation: one sample per invocation."""
        out: dict[int, float] = {}
        for rec in self.records:
            if rec["label"] != label or rec.get("planned"):
                continue
            if not include_contended and (rec.get("load") or {}).get("contended"):
                continue
            for row in rec.get("rows", []):
                if row["test"] == test and row["samples_ts"]:
                    out[rec["round"]] = sum(row["samples_ts"]) / len(row["samples_ts"])
        return out

    def paired(self, a: str, b: str, test: str, include_contended: bool = True,
               band: float = stats.EQUIVALENCE_BAND) -> stats.PairedRatio:
        """``b`` relative to ``a`` from the rounds both ran in (paired per-round log-ratios)."""
        ma = self.round_means(a, test, include_contended)
        mb = self.round_means(b, test, include_contended)
        rounds = sorted(set(ma) & set(mb))
        return stats.paired_ratio([ma[r] for r in rounds], [mb[r] for r in rounds], a, b, band=band)

    def samples(self, label: str, test: str, include_contended: bool = True) -> list[float]:
        return [x for r in self.rounds(label, test, include_contended) for x in r]

    def contended_runs(self, label: str | None = None) -> int:
        return sum(1 for r in self.records if (label is None or r["label"] == label)
                   and (r.get("load") or {}).get("contended"))

    # -- statistics
    def summary(self):
        """One row per configuration and test: n, mean, std, CV, 95% CI (t/s)."""
        import pandas as pd

        rows = []
        for label in self.labels:
            for test in self.tests():
                s = stats.summarize(self.samples(label, test))
                if s.n == 0:
                    continue
                rows.append({"config": label, "test": test, "n": s.n, "mean t/s": s.mean, "std": s.std,
                             "CV %": s.cv * 100, "CI low": s.ci_low, "CI high": s.ci_high,
                             "rounds": len(self.rounds(label, test)),
                             "contended runs": self.contended_runs(label)})
        if not rows:
            return pd.DataFrame([{"config": c["label"], "command": c.get("shown", ""), "status": "planned, not run"}
                                 for c in self.configs])
        return pd.DataFrame(rows).round(3)

    def compare(self, a: str, b: str, test: str, method: str = "fieller",
                include_contended: bool = True) -> stats.Comparison:
        return stats.compare(self.samples(a, test, include_contended), self.samples(b, test, include_contended),
                             a, b, method=method,
                             rounds_a=self.rounds(a, test, include_contended),
                             rounds_b=self.rounds(b, test, include_contended))

    def comparisons(self, baseline: str | None = None, method: str = "fieller"):
        """Each configuration against ``baseline`` (default: the experiment's), per test."""
        import pandas as pd

        base = baseline or self.baseline or (self.labels[0] if self.labels else None)
        rows = []
        for label in self.labels:
            if label == base:
                continue
            for test in self.tests():
                c = self.compare(base, label, test, method)
                if not c.n_a or not c.n_b:
                    continue
                rr = c.round_ratios or []
                rows.append({"test": test, "A": base, "B": label, "mean A": c.mean_a, "mean B": c.mean_b,
                             "B/A": c.ratio, "CI low": c.ci_low, "CI high": c.ci_high, "p (Welch)": c.p_welch,
                             "p (Mann-Whitney)": c.p_mannwhitney, "significant": c.significant,
                             "round ratios": ", ".join(f"{x:.3f}" for x in rr), "verdict": c.verdict})
        return pd.DataFrame(rows).round(4)

    def best(self, test_prefix: str = "tg") -> str | None:
        """The configuration with the highest mean on the first test starting with ``test_prefix``."""
        tests = [t for t in self.tests() if t.startswith(test_prefix)]
        if not tests:
            return None
        # contended runs are left out when every configuration has a clean one
        clean = all(self.samples(lab, tests[0], include_contended=False) for lab in self.labels)
        means = {lab: stats.summarize(self.samples(lab, tests[0], include_contended=not clean)).mean
                 for lab in self.labels}
        means = {k: v for k, v in means.items() if not math.isnan(v)}
        return max(means, key=means.get) if means else None

    # -- record
    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary().to_dict(orient="records") if not self.planned else []
        d["comparisons"] = self.comparisons().to_dict(orient="records") if not self.planned and len(self.labels) > 1 else []
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Experiment":
        return cls(**{k: d[k] for k in ("name", "title", "configs", "records", "baseline", "notes", "extra") if k in d})

    def _repr_markdown_(self) -> str:
        head = f"**{self.title}**"
        if self.planned:
            cmds = "\n".join(f"$ {c.get('shown', '')}" for c in self.configs)
            return f"{head}: planned, not run ({len(self.records)} invocations)\n\n```\n{cmds}\n```"
        parts = [head, "", md_table(self.summary())]
        if len(self.labels) > 1:
            comp = self.comparisons()
            if len(comp):
                cols = ["test", "A", "B", "B/A", "CI low", "CI high", "p (Welch)", "verdict"]
                parts += ["", md_table(comp[cols])]
        c = self.contended_runs()
        if c:
            parts += ["", f"⚠ {c} of {len(self.records)} runs were contended (other processes used more than "
                          f"{CONTENDED_CORES} cores): their samples are kept and marked."]
        parts += [f"- {n}" for n in self.notes]
        return "\n".join(parts)


def md_table(df) -> str:
    """A DataFrame as a Markdown table (no tabulate dependency)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        return str(v).replace("|", "\\|")

    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def config_dict(cfg: BenchConfig) -> dict:
    d = asdict(cfg)
    d["argv"] = cfg.argv()
    d["shown"] = cfg.shown()
    return d


def experiment(run, name: str, title: str, configs: Sequence[BenchConfig], rounds: int,
               help_info: dict | None = None, baseline: str | None = None,
               notes: Iterable[str] = ()) -> Experiment:
    """Measure ``configs`` in ``rounds`` interleaved rounds and return the Experiment."""
    records = interleave(run, configs, rounds, help_info)
    return Experiment(name=name, title=title, configs=[config_dict(c) for c in configs], records=records,
                      baseline=baseline or configs[0].label, notes=list(notes))


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
        from . import model, verify

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
    nproc_r = run.runner.probe(["nproc"], quiet=True, check=False)
    nproc = int(nproc_r.stdout.strip()) if nproc_r.stdout.strip().isdigit() else (os.cpu_count() or 1)
    help_text, help_info = "", None
    if (bin_dir / "llama-bench").exists():
        h = run.runner.probe([str(bin_dir / "llama-bench"), "--help"], quiet=True, check=False)
        help_text = h.stdout + h.stderr
        help_info = parse_help(help_text)
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
    threads = list(range(1, inp.nproc + 1)) if b.threads == "auto" else list(b.threads)
    if b.quick:
        return Sizes([64], [16], 2, 2, threads, [32], [8], 2)
    return Sizes(list(b.prompt_sizes), list(b.gen_sizes), b.repetitions, b.rounds, threads, [128], [32],
                 max(2, min(b.repetitions, 3)))


def cfg(inp: Inputs, label: str, threads: int, sz: Sizes, *, model: dict | None = None, bench: str | None = None,
        flags: dict | None = None, prompt=None, gen=None, reps=None, note: str = "") -> BenchConfig:
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
    best = ex.best("tg")
    ex.extra["best"] = int(best.split("=")[1]) if best else None
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


def choose(sweep: Experiment, fa: Experiment | None, nproc: int, default_t: int | None) -> dict:
    """The runbook's configuration: the best measured threads, plus -fa when it measured better."""
    threads = sweep.extra.get("best") or default_t or nproc
    flags: dict[str, str] = {}
    why = [f"threads {threads}: highest mean tg in the sweep" if sweep.extra.get("best")
           else f"threads {threads}: not measured (plan mode): llama-bench's default"]
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
    return {"threads": int(threads), "flags": flags, "why": why, "planned": sweep.planned}


def three_way(run, inp: Inputs, chosen: dict, sz: Sizes | None = None) -> Experiment:
    """The blueprint's command, llama.cpp's defaults and the runbook's choice, in one interleaved run."""
    sz = sz or sizes(run, inp)
    dt = default_threads(inp.help) if inp.help else None
    dt = dt or inp.nproc
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
    from .context import open_run
    from .params import load_params
    from .records import new_run_id, run_dir_for

    params = load_params(params_file)
    if quick:
        params.runtime.bench.quick = True
    d = run_dir or run_dir_for(params.machine_name(), new_run_id(False, "bench"))
    run = open_run(params, run_dir=d, plan=False, phase="05")
    inp = inputs(run)
    sz = sizes(run, inp)
    sweep = thread_sweep(run, inp, sz)
    run.record("thread_sweep", sweep.to_dict())
    fa = flash_attn_ab(run, inp, sweep.extra.get("best") or inp.nproc, sz)
    run.record("flash_attn", fa.to_dict())
    chosen = choose(sweep, fa, inp.nproc, default_threads(inp.help) if inp.help else None)
    run.record("chosen", chosen)
    three = three_way(run, inp, chosen, sz)
    run.record("three_way", three.to_dict())
    return run, three, chosen
