import math

import numpy as np
import pytest
from scipy import stats as st

from aios_lib.measure import stats

A = [101.2, 98.7, 103.4, 99.9, 100.8, 97.5, 102.2]
B = [112.0, 109.1, 115.3, 111.7, 108.8, 113.9]


def test_summary_matches_scipy():
    s = stats.summarize(A)
    a = np.array(A)
    lo, hi = st.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    assert s.n == 7
    assert s.mean == pytest.approx(a.mean())
    assert s.std == pytest.approx(a.std(ddof=1))
    assert s.cv == pytest.approx(a.std(ddof=1) / a.mean())
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert s.median == pytest.approx(np.median(a)) and s.min == 97.5 and s.max == 103.4


def test_summary_edge_cases():
    assert stats.summarize([]).n == 0 and math.isnan(stats.summarize([]).mean)
    one = stats.summarize([5.0])
    assert one.mean == 5.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    const = stats.summarize([3.0, 3.0, 3.0])
    assert const.std == 0 and const.ci_low == const.ci_high == 3.0


def test_welch_matches_scipy():
    w = stats.welch(B, A)
    ref = st.ttest_ind(B, A, equal_var=False)
    assert w.statistic == pytest.approx(ref.statistic)
    assert w.p == pytest.approx(ref.pvalue)
    assert w.df == pytest.approx(ref.df)


def test_mann_whitney_matches_scipy():
    m = stats.mann_whitney(B, A)
    ref = st.mannwhitneyu(B, A, alternative="two-sided")
    assert m.p == pytest.approx(ref.pvalue) and m.statistic == pytest.approx(ref.statistic)


def test_fieller_interval_boundaries_solve_the_pivot():
    ratio, lo, hi = stats.fieller_ratio(B, A)
    b, a = np.array(B), np.array(A)
    assert ratio == pytest.approx(b.mean() / a.mean())
    assert lo < ratio < hi
    sb2, sa2 = b.var(ddof=1) / len(b), a.var(ddof=1) / len(a)
    # at each boundary, (mb - r ma) / sqrt(sb2 + r^2 sa2) equals the t quantile at its df
    for r in (lo, hi):
        z = abs(b.mean() - r * a.mean()) / math.sqrt(sb2 + r ** 2 * sa2)
        assert 1.9 < z < 2.6  # t(0.975) for ~10 df is 2.2; df is evaluated at the point estimate


def test_fieller_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.normal(100, 5, 40)
    b = rng.normal(115, 6, 40)
    _, lo, hi = stats.fieller_ratio(b, a)
    ref = st.bootstrap((b, a), lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis),
                       vectorized=True, paired=False, n_resamples=4000, random_state=0, method="percentile")
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.01)
    _, blo, bhi = stats.bootstrap_ratio(b, a, seed=0)
    assert blo == pytest.approx(lo, abs=0.01) and bhi == pytest.approx(hi, abs=0.01)
    # seeded: the same every time
    assert stats.bootstrap_ratio(b, a, seed=0) == stats.bootstrap_ratio(b, a, seed=0)


def test_fieller_unbounded_when_denominator_is_noise():
    _, lo, hi = stats.fieller_ratio([1.0, 2.0, 3.0], [0.1, -0.1, 0.05])
    assert lo == float("-inf") and hi == float("inf")


def test_compare_significant_and_not():
    c = stats.compare(A, B, "a", "b", rounds_a=[A[:3], A[3:]], rounds_b=[B[:3], B[3:]])
    assert c.significant and c.ratio > 1.08 and c.ci_low > 1 and c.p_welch < 0.001
    assert "b faster" in c.verdict
    assert len(c.round_ratios) == 2 and all(r > 1 for r in c.round_ratios)
    same = stats.compare(A, list(reversed(A)), "a", "a2")
    assert not same.significant and same.ratio == pytest.approx(1.0) and same.ci_low < 1 < same.ci_high
    assert "no significant difference" in same.verdict
    boot = stats.compare(A, B, method="bootstrap")
    assert boot.method == "bootstrap" and boot.ci_low > 1
    with pytest.raises(ValueError):
        stats.compare(A, B, method="guess")


def test_percentiles_and_jitter_match_numpy():
    rng = np.random.default_rng(2)
    lat = rng.gamma(4, 2.5, 500)
    p = stats.percentiles(lat)
    assert p["p50"] == pytest.approx(np.percentile(lat, 50))
    assert p["p99"] == pytest.approx(np.percentile(lat, 99))
    j = stats.jitter(lat)
    assert j["n"] == 500 and j["p95"] <= j["p99"] and j["p99_over_p50"] > 1
