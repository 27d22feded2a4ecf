"""Statistics for benchmark samples: pure functions, no I/O.

Per test: mean, standard deviation, coefficient of variation, a 95% confidence interval of the
mean (Student t). Between two configurations: the ratio of means with a confidence interval
(Fieller's theorem with Welch-Satterthwaite degrees of freedom, or a seeded bootstrap), and
significance tests (Welch's t test, Mann-Whitney U). Latency percentiles for jitter.

A caveat the reports repeat: repetitions inside one llama-bench invocation are not fully
independent (they share that invocation's placement, caches and background load). That is why
comparisons pool samples from several interleaved rounds and also show each round's own ratio.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st


@dataclass
class Summary:
    n: int
    mean: float
    std: float
    cv: float  # std / mean (0.05 = 5%)
    ci_low: float
    ci_high: float
    median: float
    min: float
    max: float
    conf: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def _arr(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(x), dtype=float)
    return a[np.isfinite(a)]


def summarize(samples: Sequence[float], conf: float = 0.95) -> Summary:
    """Mean, sample standard deviation (ddof=1), CV and the t-based CI of the mean."""
    a = _arr(samples)
    n = len(a)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, nan, conf)
    mean = float(a.mean())
    if n == 1:
        v = float(a[0])
        return Summary(1, mean, float("nan"), float("nan"), float("nan"), float("nan"), v, v, v, conf)
    std = float(a.std(ddof=1))
    half = float(_st.t.ppf(0.5 + conf / 2, n - 1)) * std / math.sqrt(n)
    cv = std / mean if mean else float("nan")
    return Summary(n, mean, std, cv, mean - half, mean + half, float(np.median(a)), float(a.min()),
                   float(a.max()), conf)


@dataclass
class TestResult:
    statistic: float
    p: float
    df: float | None = None
    name: str = ""


def welch(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t test of mean(a) == mean(b), two-sided."""
    x, y = _arr(a), _arr(b)
    na, nb = len(x), len(y)
    if na < 2 or nb < 2:
        return TestResult(float("nan"), float("nan"), None, "welch")
    va, vb = x.var(ddof=1) / na, y.var(ddof=1) / nb
    se2 = va + vb
    if se2 == 0:
        same = x.mean() == y.mean()
        return TestResult(0.0 if same else math.copysign(math.inf, x.mean() - y.mean()),
                          1.0 if same else 0.0, float(na + nb - 2), "welch")
    t = (x.mean() - y.mean()) / math.sqrt(se2)
    df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    p = 2 * float(_st.t.sf(abs(t), df))
    return TestResult(float(t), p, float(df), "welch")


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Mann-Whitney U (two-sided): no normality assumption, robust to one outlier sample."""
    x, y = _arr(a), _arr(b)
    if len(x) < 1 or len(y) < 1:
        return TestResult(float("nan"), float("nan"), None, "mann-whitney")
    r = _st.mannwhitneyu(x, y, alternative="two-sided")
    return TestResult(float(r.statistic), float(r.pvalue), None, "mann-whitney")


def fieller_ratio(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> tuple[float, float, float]:
    """mean(a)/mean(b) and its Fieller confidence interval for independent samples.

    Solves (ma - r*mb)^2 <= t^2 (sa^2 + r^2 sb^2) for r, with sa^2, sb^2 the variances of the
    means and t at the Welch-Satterthwaite degrees of freedom. When mean(b) is not clearly
    non-zero the interval is unbounded and (-inf, inf) is returned.
    """
    x, y = _arr(a), _arr(b)
    na, nb = len(x), len(y)
    ma, mb = float(x.mean()), float(y.mean())
    ratio = ma / mb if mb else float("nan")
    if na < 2 or nb < 2:
        return ratio, float("nan"), float("nan")
    sa2, sb2 = x.var(ddof=1) / na, y.var(ddof=1) / nb
    se2 = sa2 + sb2
    if se2 == 0:
        return ratio, ratio, ratio
    # degrees of freedom of the difference ma - r*mb at r = ratio (Welch-Satterthwaite)
    va, vb = sa2, ratio ** 2 * sb2
    den = (va ** 2 / (na - 1) if na > 1 else 0) + (vb ** 2 / (nb - 1) if nb > 1 else 0)
    df = (va + vb) ** 2 / den if den > 0 else float(na + nb - 2)
    t = float(_st.t.ppf(0.5 + conf / 2, df))
    qa = mb ** 2 - t ** 2 * sb2
    qb = -2 * ma * mb
    qc = ma ** 2 - t ** 2 * sa2
    if qa <= 0:
        return ratio, float("-inf"), float("inf")
    disc = qb ** 2 - 4 * qa * qc
    if disc < 0:
        return ratio, float("-inf"), float("inf")
    r1 = (-qb - math.sqrt(disc)) / (2 * qa)
    r2 = (-qb + math.sqrt(disc)) / (2 * qa)
    return ratio, min(r1, r2), max(r1, r2)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], conf: float = 0.95, n_boot: int = 10000,
                    seed: int = 0) -> tuple[float, float, float]:
    """mean(a)/mean(b) with a seeded percentile-bootstrap interval (resampling each side)."""
    x, y = _arr(a), _arr(b)
    ratio = float(x.mean() / y.mean())
    if len(x) < 2 or len(y) < 2:
        return ratio, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    bx = rng.choice(x, size=(n_boot, len(x)), replace=True).mean(axis=1)
    by = rng.choice(y, size=(n_boot, len(y)), replace=True).mean(axis=1)
    r = bx / by
    lo, hi = np.quantile(r, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return ratio, float(lo), float(hi)


@dataclass
class Comparison:
    """B relative to A: ratio = mean(b) / mean(a) (> 1: b is faster for throughput)."""

    label_a: str
    label_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    ratio: float
    ci_low: float
    ci_high: float
    method: str
    p_welch: float
    p_mannwhitney: float
    significant: bool
    conf: float = 0.95
    #: ratio of each interleaved round (b_i / a_i), when rounds are known
    round_ratios: list[float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.ratio):
            return "no data"
        pct = (self.ratio - 1) * 100
        if not self.significant:
            return f"no significant difference ({pct:+.1f}%, p={self.p_welch:.2g})"
        return f"{self.label_b} {'faster' if pct > 0 else 'slower'} by {abs(pct):.1f}% (p={self.p_welch:.2g})"


def compare(a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B",
            conf: float = 0.95, method: str = "fieller", seed: int = 0, alpha: float = 0.05,
            rounds_a: Sequence[Sequence[float]] | None = None,
            rounds_b: Sequence[Sequence[float]] | None = None) -> Comparison:
    """Ratio mean(b)/mean(a) with CI and significance.

    A difference counts as significant only when Welch's test gives p < alpha AND the ratio's
    CI excludes 1 (the two agree except in edge cases).
    """
    x, y = _arr(a), _arr(b)
    nan = float("nan")
    if len(x) == 0 or len(y) == 0:
        return Comparison(label_a, label_b, len(x), len(y), nan, nan, nan, nan, nan, method, nan, nan, False, conf)
    if method == "bootstrap":
        ratio, lo, hi = bootstrap_ratio(y, x, conf=conf, seed=seed)
    elif method == "fieller":
        ratio, lo, hi = fieller_ratio(y, x, conf=conf)
    else:
        raise ValueError(f"unknown ratio method {method!r}: fieller or bootstrap")
    w = welch(y, x)
    mw = mann_whitney(y, x)
    sig = bool(math.isfinite(w.p) and w.p < alpha and math.isfinite(lo) and (lo > 1 or hi < 1))
    rr = None
    if rounds_a is not None and rounds_b is not None:
        rr = [float(np.mean(rb) / np.mean(ra)) for ra, rb in zip(rounds_a, rounds_b)
              if len(ra) and len(rb) and np.mean(ra)]
    return Comparison(label_a, label_b, len(x), len(y), float(x.mean()), float(y.mean()), ratio, lo, hi,
                      method, w.p, mw.p, sig, conf, rr)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """p50/p95/p99 (linear interpolation, numpy's default) of ``values``."""
    a = _arr(values)
    if len(a) == 0:
        return {f"p{int(q)}": float("nan") for q in qs}
    return {f"p{int(q)}": float(np.percentile(a, q)) for q in qs}


def jitter(values: Sequence[float]) -> dict[str, float]:
    """Latency jitter summary: percentiles, mean, std, and the p99/p50 tail ratio."""
    a = _arr(values)
    out = percentiles(a)
    out.update(n=int(len(a)), mean=float(a.mean()) if len(a) else float("nan"),
               std=float(a.std(ddof=1)) if len(a) > 1 else float("nan"))
    out["p99_over_p50"] = out["p99"] / out["p50"] if len(a) and out["p50"] else float("nan")
    return out


# ---- paired rounds: the invocation is the unit ---------------------------------------------------

#: a ratio whose CI lies inside 1 +- this is "no difference that matters" (2%)
EQUIVALENCE_BAND = 0.02


@dataclass
class PairedRatio:
    """B relative to A from interleaved rounds: one sample per configuration per round (the mean
    of one process invocation), the per-round log-ratios log(B_i/A_i) averaged, a Student t
    interval over rounds, exponentiated. A and B ran adjacent in time in each round, so slow
    drift of the machine cancels within each pair instead of widening the interval."""

    label_a: str
    label_b: str
    rounds: int
    ratio: float
    ci_low: float
    ci_high: float
    log_ratios: list[float]
    conf: float = 0.95
    band: float = EQUIVALENCE_BAND
    method: str = "t interval over per-round log-ratios"

    @property
    def half_width(self) -> float:
        """Relative half-width of the CI (0.02 = the ratio is known to +-2%)."""
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return float("nan")
        return (self.ci_high - self.ci_low) / 2 / self.ratio

    @property
    def verdict(self) -> str:
        """higher | lower | equivalent | not shown | no data.

        ``equivalent`` only when the whole CI lies inside 1 +- band: a CI that merely contains 1
        says the measurement could not tell, not that there is no difference."""
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return "no data"
        if self.ci_low > 1:
            return "higher"
        if self.ci_high < 1:
            return "lower"
        if self.ci_low >= 1 - self.band and self.ci_high <= 1 + self.band:
            return "equivalent"
        return "not shown"

    def describe(self) -> str:
        """One phrase for prose and tables, generated from the numbers."""
        if self.verdict == "no data":
            return f"{self.label_b} vs {self.label_a}: not enough rounds"
        ci = f"{self.ratio:.3f}x [{self.ci_low:.3f}, {self.ci_high:.3f}], {self.rounds} rounds"
        return {
            "higher": f"{self.label_b} faster than {self.label_a}: {ci}",
            "lower": f"{self.label_b} slower than {self.label_a}: {ci}",
            "equivalent": f"{self.label_b} and {self.label_a} equivalent within +-{self.band:.0%}: {ci}",
            "not shown": f"{self.label_b} vs {self.label_a}: difference not shown, CI too wide to call it "
                         f"equivalent within +-{self.band:.0%}: {ci}",
        }[self.verdict]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(verdict=self.verdict, half_width=self.half_width, text=self.describe())
        return d


def paired_ratio(a: Sequence[float], b: Sequence[float], label_a: str = "A", label_b: str = "B",
                 conf: float = 0.95, band: float = EQUIVALENCE_BAND) -> PairedRatio:
    """``a[i]`` and ``b[i]`` are round i's samples (one invocation each). Rounds where either is
    missing or not positive are dropped."""
    pairs = [(float(x), float(y)) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0]
    logs = [math.log(y / x) for x, y in pairs]
    n = len(logs)
    nan = float("nan")
    if n == 0:
        return PairedRatio(label_a, label_b, 0, nan, nan, nan, [], conf, band)
    m = float(np.mean(logs))
    if n == 1:
        return PairedRatio(label_a, label_b, 1, math.exp(m), nan, nan, logs, conf, band)
    se = float(np.std(logs, ddof=1)) / math.sqrt(n)
    half = float(_st.t.ppf(0.5 + conf / 2, n - 1)) * se
    return PairedRatio(label_a, label_b, n, math.exp(m), math.exp(m - half), math.exp(m + half), logs, conf, band)


def drift(values: Sequence[float]) -> dict[str, float]:
    """Linear drift of one configuration's per-round samples: slope per round as a fraction of
    the mean, and the first-to-last change the fit implies (what pairing in time cancels)."""
    y = _arr(values)
    n = len(y)
    if n < 3 or not y.mean():
        return {"rounds": n, "slope_per_round": float("nan"), "total": float("nan")}
    slope = float(np.polyfit(np.arange(n), y, 1)[0]) / float(y.mean())
    return {"rounds": n, "slope_per_round": slope, "total": slope * (n - 1)}
