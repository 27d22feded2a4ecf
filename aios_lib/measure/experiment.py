"""Configurations measured in interleaved rounds, and the pure data model of the result.

Round 1 runs A then B, round 2 starts with B, and so on (the order rotates each round so neither
side always goes first); never all of A and then all of B. :class:`Experiment` keeps every
sample and re-creates itself from ``results.json``; its statistics take one sample per
invocation and pair configurations within rounds.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence
from . import stats
from .llama_bench import BenchConfig, CONTENDED_CORES, config_dict, run_config
from ..core.markdown import md_table


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

    def _measured(self, label: str, test: str, include_contended: bool = True):
        """(record, row) of every invocation of ``label`` that ran ``test`` (planned ones never do)."""
        for rec in self.records:
            if rec["label"] != label or rec.get("planned"):
                continue
            if not include_contended and (rec.get("load") or {}).get("contended"):
                continue
            for row in rec.get("rows", []):
                if row["test"] == test:
                    yield rec, row

    def rounds(self, label: str, test: str, include_contended: bool = True) -> list[list[float]]:
        return [list(row["samples_ts"]) for _, row in self._measured(label, test, include_contended)]

    def round_means(self, label: str, test: str, include_contended: bool = True) -> dict[int, float]:
        """Round -> the mean of that round's invocation: one sample per invocation. When a round has
        a contended invocation and its clean repeat, the clean one is the sample."""
        out: dict[int, float] = {}
        clean: set[int] = set()
        for rec, row in self._measured(label, test, include_contended):
            if not row["samples_ts"]:
                continue
            contended = bool((rec.get("load") or {}).get("contended"))
            if contended and rec["round"] in clean:
                continue
            out[rec["round"]] = sum(row["samples_ts"]) / len(row["samples_ts"])
            if not contended:
                clean.add(rec["round"])
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


def experiment(run, name: str, title: str, configs: Sequence[BenchConfig], rounds: int,
               help_info: dict | None = None, baseline: str | None = None,
               notes: Iterable[str] = ()) -> Experiment:
    """Measure ``configs`` in ``rounds`` interleaved rounds and return the Experiment."""
    records = interleave(run, configs, rounds, help_info)
    return Experiment(name=name, title=title, configs=[config_dict(c) for c in configs], records=records,
                      baseline=baseline or configs[0].label, notes=list(notes))
