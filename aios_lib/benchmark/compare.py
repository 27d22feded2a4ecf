"""Compare benchmark records: within one run, or between two run folders.

Reads ``outputs/<machine>/<run-id>/results.json`` (and ``run.json`` for the label); never the
live system, so a record can be compared later, on another machine. The unit is the invocation:
one llama-bench process gives one sample (its mean). Within a run, configurations were measured
in the same rounds, so their ratio is paired per round. Between two runs nothing pairs them in
time: the same configuration is compared through its invocation means (ratio of means with a
Fieller 95% CI, Welch and Mann-Whitney p-values).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..measure import stats
from ..measure.experiment import Experiment
from ..core.records import read_json

#: The results.json keys of phase 05 that hold Experiments: the proof's (under ``05/proof``), then the
#: keys of records made before the proof existed (they still load and compare)
EXPERIMENTS = ("decomposition", "screen", "sweep", "quant", "three_way", "thread_sweep", "flash_attn",
               "native_vs_generic", "quant_synthetic", "quant_smollm2")


@dataclass
class RunRecord:
    dir: Path
    label: str
    results: dict
    meta: dict = field(default_factory=dict)

    @property
    def bench(self) -> dict:
        return self.results.get("05", {})

    @property
    def proof(self) -> dict:
        return self.bench.get("proof") or {}

    def experiment(self, name: str) -> Experiment | None:
        d = self.bench.get(name) or self.proof.get(name)
        return Experiment.from_dict(d) if d else None

    def experiments(self) -> dict[str, Experiment]:
        return {n: e for n in EXPERIMENTS if (e := self.experiment(n)) is not None}

    def _repr_markdown_(self) -> str:
        ex = self.experiments()
        measured = [n for n, e in ex.items() if not e.planned]
        return (f"**{self.label}** (`{self.dir}`): phase 05 experiments: {', '.join(ex) or 'none'}; "
                f"measured: {', '.join(measured) or 'none (plan mode or not run)'}")


def load_run(run_dir, label: str | None = None) -> RunRecord:
    d = Path(run_dir)
    if not (d / "results.json").exists():
        raise FileNotFoundError(f"{d}: no results.json: is this a Synapse run folder (outputs/<machine>/<run-id>)?")
    meta = read_json(d / "run.json") or {}
    return RunRecord(d, label or meta.get("run_id") or d.name, read_json(d / "results.json"), meta)


def merged(a: Experiment, b: Experiment, la: str, lb: str, configs: list[str] | None = None) -> Experiment:
    """One Experiment holding both runs' configurations, relabelled ``<run>: <config>``."""
    keep = configs or [c["label"] for c in a.configs if c["label"] in {x["label"] for x in b.configs}]
    confs, recs = [], []
    for tag, ex in ((la, a), (lb, b)):
        for c in ex.configs:
            if c["label"] in keep:
                confs.append({**c, "label": f"{tag}: {c['label']}"})
        for r in ex.records:
            if r["label"] in keep:
                recs.append({**r, "label": f"{tag}: {r['label']}"})
    return Experiment(f"{a.name}", f"{a.title}: {la} vs {lb}", confs, recs, baseline=confs[0]["label"] if confs else None)


def between(a: RunRecord, b: RunRecord, name: str = "decomposition", method: str = "fieller"):
    """Each configuration of experiment ``name`` in run B relative to the same one in run A."""
    import pandas as pd

    ea, eb = a.experiment(name), b.experiment(name)
    if ea is None or eb is None or ea.planned or eb.planned:
        from .report import Note

        return Note(f"*{name}: not measured in both runs ({a.label}, {b.label}): nothing to compare*")
    rows = []
    for c in ea.labels:
        if c not in eb.labels:
            continue
        for t in ea.tests():
            # one sample per invocation: its mean (repetitions inside a process are not independent)
            xa, xb = list(ea.round_means(c, t).values()), list(eb.round_means(c, t).values())
            if not xa or not xb:
                continue
            cmp = stats.compare(xa, xb, a.label, b.label, method=method)
            rows.append({"config": c, "test": t, f"mean {a.label}": cmp.mean_a, f"mean {b.label}": cmp.mean_b,
                         "B/A": cmp.ratio, "CI low": cmp.ci_low, "CI high": cmp.ci_high, "p (Welch)": cmp.p_welch,
                         "p (Mann-Whitney)": cmp.p_mannwhitney, "significant": cmp.significant,
                         "CV % A": stats.summarize(xa).cv * 100, "CV % B": stats.summarize(xb).cv * 100,
                         "contended runs A/B": f"{ea.contended_runs(c)}/{eb.contended_runs(c)}",
                         "verdict": cmp.verdict})
    return pd.DataFrame(rows).round(4)


def latency_side_by_side(a: RunRecord, b: RunRecord):
    import pandas as pd

    rows = []
    for r in (a, b):
        lat = r.bench.get("latency") or {}
        j = lat.get("jitter")
        if not j:
            rows.append({"run": r.label, "status": "not measured"})
            continue
        rows.append({"run": r.label, "threads": lat.get("threads"), "tokens timed": j["n"], "p50 ms": j["p50"],
                     "p95 ms": j["p95"], "p99 ms": j["p99"], "std ms": j["std"], "p99/p50": j["p99_over_p50"]})
    out = pd.DataFrame(rows).round(3)
    la, lb = (a.bench.get("latency") or {}), (b.bench.get("latency") or {})
    if la.get("itl_ms") and lb.get("itl_ms"):
        c = stats.compare(la["itl_ms"], lb["itl_ms"], a.label, b.label)
        out.attrs["comparison"] = c.as_dict()
    return out


def within(r: RunRecord, name: str = "decomposition"):
    """The run's own comparison for ``name`` (default: stock, build, flags, Synapse)."""
    ex = r.experiment(name)
    if ex is None:
        from .report import Note

        return Note(f"*{name}: not in this run's record ({r.dir})*")
    return ex


def summary_lines(ex: Experiment | None, baseline: str | None = None) -> list[str]:
    """Plain-text lines: each configuration's tg and pp relative to the baseline, with CIs."""
    if ex is None or ex.planned:
        return ["(not measured: plan mode or no record)"]
    base = baseline or ex.baseline
    lines = []
    for label in ex.labels:
        for t in ex.tests():
            s = stats.summarize(list(ex.round_means(label, t).values()))
            if not s.n:
                continue
            ci = f"95% CI {s.ci_low:.1f}-{s.ci_high:.1f}, " if s.n > 1 else ""
            line = f"{label:>16} {t:>8}: {s.mean:8.1f} t/s  ({ci}{s.n} invocations)"
            if label != base:
                pr = ex.paired(base, label, t)
                if pr.rounds > 1:
                    line += f"  x{pr.ratio:.3f} vs {base} [{pr.ci_low:.3f}, {pr.ci_high:.3f}] {pr.verdict}"
            lines.append(line)
    if ex.contended_runs():
        lines.append(f"  ({ex.contended_runs()} of {len(ex.records)} runs contended by other processes)")
    return lines
