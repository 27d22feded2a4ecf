"""Configurations measured in interleaved rounds until a ratio is known well enough.

A configuration is everything one sample runs: the llama-bench command (binary, model, threads,
flags), how its process is started (scheduling policy, nice, CPUs: an argv prefix) and the live
host settings it needs (transparent huge pages, ...). One invocation is one sample.

Each round runs every configuration once, in an order drawn afresh per round from a seeded
generator, so no configuration always goes first; live settings are put in place before each
invocation and everything is restored at the end (:class:`aios_lib.settings.live.LiveState`).
After ``min_rounds`` the primary ratio (B over A on one test) is computed from the paired
per-round log-ratios; rounds continue until its 95% CI half-width is at most ``target`` or the
time budget would be exceeded by one more round, and the result records which ended it.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from . import stats
from .experiment import Experiment
from .llama_bench import BenchConfig, check_flags, config_dict, run_config
from ..settings.live import LiveState, ProcessSettings


@dataclass
class Configuration:
    """One thing to measure: a llama-bench command, its process settings and live host settings."""

    label: str
    bench: BenchConfig
    process: ProcessSettings = field(default_factory=ProcessSettings)
    system: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def argv(self) -> list[str]:
        return [*self.process.prefix(), *self.bench.argv()]

    def shown(self) -> str:
        pre = " ".join(self.process.prefix())
        sysset = " ".join(f"{k}={v}" for k, v in self.system.items())
        return " ".join(x for x in (f"[{sysset}]" if sysset else "", pre, self.bench.shown()) if x)

    def to_dict(self) -> dict:
        d = config_dict(self.bench)
        d.update(label=self.label, argv=self.argv(), shown=self.shown(), process=asdict(self.process),
                 system=dict(self.system), note=self.note or self.bench.note)
        return d


@dataclass
class Stop:
    """Why the rounds ended."""

    reason: str  # precision | budget | max_rounds | planned
    rounds: int
    seconds: float
    half_width: float | None
    target: float | None
    budget_s: float

    def sentence(self) -> str:
        hw = f"{self.half_width:.1%}" if self.half_width is not None and self.half_width == self.half_width else "n/a"
        return {
            "precision": f"stopped after {self.rounds} rounds ({self.seconds:.0f} s): the primary ratio's 95% CI "
                         f"half-width reached {hw} (target {self.target:.1%})",
            "budget": f"stopped after {self.rounds} rounds ({self.seconds:.0f} s): the time budget of "
                      f"{self.budget_s:.0f} s ran out with the primary ratio's CI half-width at {hw} "
                      f"(target {self.target:.1%}); raise the budget for a tighter answer",
            "max_rounds": f"stopped at the maximum of {self.rounds} rounds ({self.seconds:.0f} s), CI half-width {hw}",
            "planned": "planned, not run",
        }[self.reason]


class _Invocation:
    """What :func:`run_config` needs of a configuration (its argv includes the process prefix)."""

    def __init__(self, c: Configuration):
        self.c, self.label = c, c.label

    def argv(self) -> list[str]:
        return self.c.argv()

    def shown(self) -> str:
        return self.c.shown()


def measure(run, name: str, title: str, configs: Sequence[Configuration], *,
            primary: tuple[str, str, str] | None = None, target: float = 0.02, budget_s: float = 600.0,
            min_rounds: int = 3, max_rounds: int = 50, help_info: dict | None = None, live: LiveState | None = None,
            seed: int = 0, baseline: str | None = None, notes: Sequence[str] = (), retries: int = 2,
            say=print) -> Experiment:
    """Interleaved rounds of ``configs`` with the stopping rule above; ``primary`` = (A, B, test)."""
    labels = [c.label for c in configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"configuration labels must be unique: {labels}")
    for c in configs:
        check_flags(c.bench, help_info)
    rng = random.Random(seed)
    records: list[dict] = []
    orders: list[list[str]] = []
    t0 = time.monotonic()
    stop = None
    r = 0
    while True:
        order = list(configs)
        rng.shuffle(order)
        orders.append([c.label for c in order])
        t_round = time.monotonic()
        for c in order:
            if live is not None:
                live.ensure(c.system, c.label)
            for attempt in range(1 + retries):
                rec = run_config(run, _Invocation(c), r, None)
                rec["process"] = asdict(c.process)
                rec["system"] = dict(c.system)
                rec["attempt"] = attempt
                records.append(rec)
                # another process used the CPUs meanwhile: the invocation is kept and flagged, and
                # repeated; the clean repeat is the round's sample (Experiment.round_means)
                if rec["planned"] or not (rec.get("load") or {}).get("contended"):
                    break
            if say:
                if rec["planned"]:
                    say(f"[plan] round {r + 1} {c.label}: {c.shown()}")
                else:
                    tests = ", ".join(f"{x['test']} {x['avg_ts']:.1f}" for x in rec["rows"])
                    flag = " CONTENDED" if rec["load"]["contended"] else ""
                    say(f"round {r + 1} {c.label}: {tests} t/s (others {rec['load']['others_cores']:.2f} cores){flag}")
        r += 1
        elapsed = time.monotonic() - t0
        round_s = time.monotonic() - t_round
        if run.plan:
            stop = Stop("planned", r, 0.0, None, target, budget_s)
            break
        hw = None
        if primary is not None:
            ex = Experiment(name, title, [c.to_dict() for c in configs], records)
            hw = ex.paired(*primary).half_width
        if r >= min_rounds and hw is not None and hw == hw and hw <= target:
            stop = Stop("precision", r, elapsed, hw, target, budget_s)
            break
        if r >= max_rounds:
            stop = Stop("max_rounds", r, elapsed, hw, target, budget_s)
            break
        if r >= min_rounds and elapsed + round_s > budget_s:
            stop = Stop("budget", r, elapsed, hw, target, budget_s)
            break
        if primary is None and r >= min_rounds:
            stop = Stop("max_rounds", r, elapsed, hw, target, budget_s)
            break
    ex = Experiment(name, title, [c.to_dict() for c in configs], records, baseline=baseline or labels[0],
                    notes=list(notes))
    ex.extra.update(stop=asdict(stop), stop_sentence=stop.sentence(), orders=orders, seed=seed,
                    primary=list(primary) if primary else None)
    return ex


def drift_table(ex: Experiment, test: str):
    """Per configuration: the slope of its per-round samples (what pairing in time cancels)."""
    import pandas as pd

    rows = []
    for label in ex.labels:
        means = ex.round_means(label, test)
        d = stats.drift([means[k] for k in sorted(means)])
        rows.append({"config": label, "test": test, "rounds": d["rounds"],
                     "drift per round %": d["slope_per_round"] * 100, "drift over the run %": d["total"] * 100})
    return pd.DataFrame(rows)


def paired_table(ex: Experiment, pairs: Sequence[tuple[str, str]], tests: Sequence[str] | None = None,
                 band: float = stats.EQUIVALENCE_BAND) -> "Any":
    """Paired ratios B/A with 95% CIs over rounds and the verdict, one row per (pair, test)."""
    import pandas as pd

    rows = []
    for a, b in pairs:
        for t in (tests or ex.tests()):
            pr = ex.paired(a, b, t, band=band)
            rows.append({"A": a, "B": b, "test": t, "B/A": pr.ratio, "CI low": pr.ci_low, "CI high": pr.ci_high,
                         "rounds": pr.rounds, "verdict": pr.verdict, "text": pr.describe()})
    return pd.DataFrame(rows)
