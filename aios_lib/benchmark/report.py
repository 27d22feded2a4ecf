"""Plots and tables for the benchmark record. They read recorded data (results.json), never the system.

Every function takes an :class:`aios_lib.measure.experiment.Experiment` (or recorded dicts) and returns a
matplotlib Figure, or a short Markdown note when there is nothing measured yet (plan mode).
"""
from __future__ import annotations

import math
from typing import Sequence

from ..measure import stats
from ..measure.experiment import Experiment


class Note(str):
    """A string that shows itself as Markdown in a notebook (used when there is nothing to plot)."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "inline"):
        try:
            from IPython import get_ipython

            if get_ipython() is None:
                matplotlib.use("Agg")
        except Exception:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _close(fig):
    plt = _plt()
    plt.close(fig)  # the notebook shows the returned figure once (not again at cell end)
    return fig


def planned_note(ex: Experiment | None, what: str) -> Note | None:
    if ex is None:
        return Note(f"*{what}: not measured (no inputs for it in this run)*")
    if ex.planned:
        return Note(f"*{what}: planned, not run: nothing to plot yet*")
    return None


def _err(s: stats.Summary) -> tuple[float, float]:
    if not math.isfinite(s.ci_low):
        return 0.0, 0.0
    return s.mean - s.ci_low, s.ci_high - s.mean


def sweep_plot(ex: Experiment | None):
    """Mean t/s per thread count with 95% CI bars; pp and tg side by side."""
    n = planned_note(ex, "thread sweep")
    if n:
        return n
    plt = _plt()
    tests = ex.tests()
    fig, axes = plt.subplots(1, len(tests), figsize=(4.2 * len(tests), 3.4), squeeze=False)
    for ax, test in zip(axes[0], tests):
        xs, ys, lo, hi = [], [], [], []
        for c in ex.configs:
            s = stats.summarize(ex.samples(c["label"], test))
            if not s.n:
                continue
            xs.append(c["threads"])
            ys.append(s.mean)
            e = _err(s)
            lo.append(e[0])
            hi.append(e[1])
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4)
        best = ex.extra.get("best")
        if best in xs and test.startswith("tg"):
            ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"chosen: {best}")
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(xs)
        ax.set_xlabel("threads (-t)")
        ax.set_ylabel("tokens/s (mean, 95% CI)")
        ax.set_title(test)
        ax.grid(alpha=0.3)
    fig.suptitle(ex.title, fontsize=10)
    fig.tight_layout()
    return _close(fig)


def timeline_plot(ex: Experiment | None):
    """Every sample in run order, per test; contended runs drawn hollow."""
    n = planned_note(ex, "per-sample timeline")
    if n:
        return n
    plt = _plt()
    tests = ex.tests()
    fig, axes = plt.subplots(len(tests), 1, figsize=(9, 2.4 * len(tests)), squeeze=False, sharex=True)
    colors = {c["label"]: f"C{i}" for i, c in enumerate(ex.configs)}
    for ax, test in zip(axes[:, 0], tests):
        i = 0
        seen = set()
        for rec in ex.records:
            row = next((r for r in rec.get("rows", []) if r["test"] == test), None)
            if row is None:
                continue
            ys = row["samples_ts"]
            xs = list(range(i, i + len(ys)))
            i += len(ys) + 1
            cont = (rec.get("load") or {}).get("contended")
            lab = rec["label"] if rec["label"] not in seen else None
            seen.add(rec["label"])
            ax.plot(xs, ys, "o-", color=colors.get(rec["label"]), label=lab, ms=4, lw=0.8,
                    mfc="none" if cont else colors.get(rec["label"]))
        ax.set_ylabel(f"{test} t/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=min(len(ex.configs), 4))
    axes[-1, 0].set_xlabel("sample (in run order; gaps separate invocations; hollow = contended run)")
    fig.suptitle(ex.title, fontsize=10)
    fig.tight_layout()
    return _close(fig)


def bars_plot(ex: Experiment | None, normalize: bool = False):
    """Bars of mean t/s with 95% CIs, one panel per test (``normalize``: relative to the baseline)."""
    n = planned_note(ex, "comparison bars")
    if n:
        return n
    plt = _plt()
    tests = ex.tests()
    fig, axes = plt.subplots(1, len(tests), figsize=(3.6 * len(tests), 3.4), squeeze=False)
    for ax, test in zip(axes[0], tests):
        labels, means, errs = [], [], [[], []]
        base = stats.summarize(ex.samples(ex.baseline, test)).mean if ex.baseline else None
        for c in ex.configs:
            s = stats.summarize(ex.samples(c["label"], test))
            if not s.n:
                continue
            k = 1 / base if normalize and base else 1
            labels.append(c["label"])
            means.append(s.mean * k)
            e = _err(s)
            errs[0].append(e[0] * k)
            errs[1].append(e[1] * k)
        ax.bar(range(len(labels)), means, yerr=errs, capsize=5, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, fontsize=8)
        ax.set_title(test)
        ax.set_ylabel("relative to " + ex.baseline if normalize else "tokens/s (95% CI)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(ex.title, fontsize=10)
    fig.tight_layout()
    return _close(fig)


def roofline_plot(points: Sequence, bandwidth_gbs: float | None):
    """tg t/s against bytes read per token, with the bandwidth ceiling t/s = BW / bytes."""
    if not points or not bandwidth_gbs:
        return Note("*roofline: planned, not run: no bandwidth or tg measurement yet*")
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sizes = [p.bytes_per_token for p in points]
    xs = np.geomspace(min(sizes) * 0.5, max(sizes) * 2, 50)
    ax.plot(xs / 1e6, bandwidth_gbs * 1e9 / xs, "k-", lw=1.2, label=f"roofline: {bandwidth_gbs:.1f} GB/s read")
    for i, p in enumerate(points):
        ax.plot(p.bytes_per_token / 1e6, p.tg_ts, "s" if p.synthetic else "o", color=f"C{i}", ms=7,
                label=f"{p.label}: {p.efficiency:.0%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes read per token (model size, MB)")
    ax.set_ylabel("tg tokens/s")
    ax.set_title("Token generation against the memory roofline (squares: SYNTHETIC model)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _close(fig)


def latency_plot(lat: dict | None, title: str = "Inter-token latency (streamed from llama-server)"):
    """Histogram of inter-token gaps with p50/p95/p99 marked."""
    if not lat or lat.get("planned") or not lat.get("itl_ms"):
        return Note("*inter-token latency: planned, not run*")
    plt = _plt()
    itl = lat["itl_ms"]
    j = lat.get("jitter") or stats.jitter(itl)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.3))
    a1.hist(itl, bins=40, color="C0", alpha=0.8)
    for q, c in (("p50", "C2"), ("p95", "C1"), ("p99", "C3")):
        a1.axvline(j[q], color=c, ls="--", label=f"{q} {j[q]:.1f} ms")
    a1.set_xlabel("ms between tokens")
    a1.set_ylabel("tokens")
    a1.legend(fontsize=8)
    a2.plot(itl, lw=0.6)
    a2.set_xlabel("token (all streams, in order)")
    a2.set_ylabel("ms")
    a2.grid(alpha=0.3)
    fig.suptitle(f"{title}, t={lat.get('threads')}", fontsize=10)
    fig.tight_layout()
    return _close(fig)


def latency_table(lat: dict | None):
    import pandas as pd

    if not lat or lat.get("planned") or not lat.get("jitter"):
        return Note("*inter-token latency: planned, not run*")
    j = lat["jitter"]
    ttft = stats.percentiles(lat.get("ttft_ms") or [])
    return pd.DataFrame([{"tokens timed": j["n"], "p50 ms": j["p50"], "p95 ms": j["p95"], "p99 ms": j["p99"],
                          "mean ms": j["mean"], "std ms": j["std"], "p99/p50": j["p99_over_p50"],
                          "time to first token p50 ms": ttft["p50"], "threads": lat.get("threads")}]).round(3)


def rep_jitter_table(experiments: Sequence[Experiment | None]):
    """Jitter across repetitions: CV of the samples per config and test (the blueprint's 'std dev')."""
    import pandas as pd

    rows = []
    for ex in experiments:
        if ex is None or ex.planned:
            continue
        for c in ex.configs:
            for t in ex.tests():
                s = stats.summarize(ex.samples(c["label"], t))
                within = [stats.summarize(r).cv for r in ex.rounds(c["label"], t) if len(r) > 1]
                if s.n:
                    rows.append({"experiment": ex.name, "config": c["label"], "test": t, "n": s.n,
                                 "std t/s": s.std, "CV % (all samples)": s.cv * 100,
                                 "CV % (within one invocation, mean)": (sum(within) / len(within) * 100)
                                 if within else float("nan")})
    if not rows:
        return Note("*repetition jitter: planned, not run*")
    return pd.DataFrame(rows).round(2)


def findings(chosen: dict | None, three: Experiment | None, native: Experiment | None, quant: Experiment | None,
             points: Sequence | None, lat: dict | None, nproc: int | None = None) -> Note:
    """The phase's answers in plain words, from the measurements (or 'not measured')."""
    out = ["### What this run measured", ""]

    def cmp_line(ex, a, b, what):
        if ex is None or ex.planned:
            return f"- {what}: not measured in this run."
        parts = []
        for t in ex.tests():
            c = ex.compare(a, b, t)
            if c.n_a and c.n_b:
                parts.append(f"{t} {b}/{a} = {c.ratio:.3f} (95% CI {c.ci_low:.3f}-{c.ci_high:.3f}, "
                             f"p={c.p_welch:.2g}: {'significant' if c.significant else 'not significant'})")
        cont = ex.contended_runs()
        tail = f" ({cont} of {len(ex.records)} runs were contended.)" if cont else ""
        return f"- {what}: " + "; ".join(parts) + "." + tail

    if chosen:
        out.append(f"- Threads: the runbook uses **-t {chosen['threads']}** "
                   f"({'; '.join(chosen.get('why', []))})" + (f"; nproc is {nproc}." if nproc else "."))
    if three is not None and not three.planned:
        out.append(cmp_line(three, "blueprint", "defaults", "llama.cpp defaults vs the blueprint's `-t $(nproc)`"))
        out.append(cmp_line(three, "blueprint", "runbook", "The runbook's choice vs the blueprint's command"))
    else:
        out.append("- Three-way comparison: not measured in this run.")
    out.append(cmp_line(native, "generic x86-64", "native", "Native (-march=native) build vs generic x86-64 build"))
    out.append(cmp_line(quant, "Q4_K_M", "Q5_K_M", "Q5_K_M vs Q4_K_M on the SYNTHETIC model (blueprint: '~15% slower')"))
    if quant is not None and not quant.planned:
        tg = [t for t in quant.tests() if t.startswith("tg")]
        if tg:
            c = quant.compare("Q4_K_M", "Q5_K_M", tg[0])
            slower = (1 - c.ratio) * 100
            lo, hi = (1 - c.ci_high) * 100, (1 - c.ci_low) * 100
            out.append(f"  - In words: for token generation Q5_K_M is **{slower:.1f}% slower** "
                       f"(95% CI {lo:.1f}% to {hi:.1f}%) on this machine; the blueprint's ~15% is "
                       + ("inside" if lo <= 15 <= hi else "outside") + " that interval.")
    out.append("- SmolLM2-135M cannot answer the Q4_K_M/Q5_K_M question: its width 576 is not a multiple of 256, so "
               "llama-quantize gives most tensors q5_0/q5_1 instead of K-quants.")
    if points:
        from .roofline import verdict

        for p in points:
            out.append(f"- Roofline: {verdict(p)} ({p.achieved_gbs:.1f} of {p.bandwidth_gbs:.1f} GB/s).")
    else:
        out.append("- Roofline: not measured in this run.")
    if lat and lat.get("jitter"):
        j = lat["jitter"]
        out.append(f"- Inter-token latency (llama-server, streamed, t={lat.get('threads')}): p50 {j['p50']:.1f} ms, "
                   f"p95 {j['p95']:.1f} ms, p99 {j['p99']:.1f} ms over {j['n']} tokens (p99/p50 {j['p99_over_p50']:.2f}).")
    else:
        out.append("- Inter-token latency: not measured in this run.")
    return Note("\n".join(out))


def ratio_plot(rows: Sequence[dict], title: str, band: float = stats.EQUIVALENCE_BAND, lower_is_better: bool = False):
    """Paired ratios with their 95% CIs as horizontal bars against 1, the equivalence band shaded.
    ``rows``: {"label", "ratio", "ci_low", "ci_high"} (PairedRatio.as_dict() plus a label)."""
    rows = [r for r in rows if r.get("ratio") is not None and r.get("ratio") == r.get("ratio")]
    if not rows:
        return Note(f"*{title}: planned, not run*")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        lo, hi = r.get("ci_low"), r.get("ci_high")
        good = (lo is not None and (hi < 1 if lower_is_better else lo > 1))
        bad = (lo is not None and (lo > 1 if lower_is_better else hi < 1))
        color = "tab:green" if good else ("tab:red" if bad else "tab:gray")
        if lo is not None and lo == lo:
            ax.plot([lo, hi], [y, y], color=color, lw=3, solid_capstyle="butt")
        ax.plot([r["ratio"]], [y], "o", color=color)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvspan(1 - band, 1 + band, color="tab:blue", alpha=0.08, label=f"equivalent within ±{band:.0%}")
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("ratio (paired over rounds, 95% CI)" + ("; below 1 is better" if lower_is_better else ""))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _close(fig)
