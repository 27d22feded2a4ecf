"""What gets served is what gets measured: stock llama-server against Synapse's, on loopback.

llama-server adds sampling, slots, the HTTP path and defaults of its own, so the headline is also
measured through a real ``llama-server`` on 127.0.0.1: the stock build with its defaults against
the verified build with the chosen flags, started the way the Phase 6 unit starts it (scheduling
policy, nice value) on the host with Synapse's live settings. One server session is one sample:
start, one warm-up request, then a few streamed completions; the session gives generation t/s and
prompt t/s (the server's own timings), time to first token, and the inter-token gaps' p50/p95/p99.
Sessions of the two sides alternate in rounds (order drawn per round) and every metric becomes a
paired ratio with a 95% CI over rounds.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..measure import stats
from ..measure.server import LlamaServer
from ..settings.live import LiveState, ProcessSettings

#: session metrics; for the latencies lower is better
METRICS = {"gen_tps": "generation t/s", "prompt_tps": "prompt t/s", "ttft_ms": "time to first token (ms)",
           "itl_p50_ms": "inter-token p50 (ms)", "itl_p95_ms": "inter-token p95 (ms)",
           "itl_p99_ms": "inter-token p99 (ms)"}
LOWER_IS_BETTER = {"ttft_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms"}

#: a prompt of a few hundred characters, so prompt processing shows in the timings
PROMPT = ("The history of the city begins with a small settlement on the river, where traders met to "
          "exchange grain, salt and cloth. Over the centuries the settlement grew into a market town, then "
          "into a city with walls, bridges and a cathedral. Write the next chapter of that history:")


@dataclass
class ServerSide:
    label: str
    binary: str
    flags: dict[str, str | None] = field(default_factory=dict)  # None: a flag without a value
    threads: int | None = None
    process: ProcessSettings = field(default_factory=ProcessSettings)
    system: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def extra(self) -> list[str]:
        out: list[str] = []
        for k, v in self.flags.items():
            if k != "-t":
                out += [k] if v is None else [k, str(v)]
        return out


class _Server(LlamaServer):
    """llama-server started behind a process-settings prefix (chrt, nice, taskset)."""

    def __init__(self, run, side: ServerSide, model: str, threads: int, ctx: int):
        super().__init__(run, side.binary, model, threads=threads, ctx=ctx, extra=side.extra())
        if side.threads is None and "-t" not in side.flags:
            i = self.argv.index("-t")  # stock: llama-server's own default thread count
            del self.argv[i:i + 2]
        self.argv = [*side.process.prefix(), *self.argv]


def session(run, side: ServerSide, model: str, *, threads: int, requests: int, n_predict: int,
            ctx: int = 2048) -> dict:
    """One server session: start, warm up, ``requests`` streamed completions, stop."""
    t = int(side.flags.get("-t", side.threads or threads))
    srv = _Server(run, side, model, t, ctx)
    rec: dict[str, Any] = {"label": side.label, "command": " ".join(srv.argv), "planned": False}
    with srv:
        if srv.planned:
            rec["planned"] = True
            return rec
        srv.stream(PROMPT, 4)  # warm-up, not kept
        streams = [srv.stream(PROMPT, n_predict, seed=i) for i in range(requests)]
        rec["ready_s"] = srv.ready_s
    gaps = [g for s in streams for g in s.itl_ms]
    gen = [s.timings.get("predicted_per_second") for s in streams if s.timings.get("predicted_per_second")]
    pp = [s.timings.get("prompt_per_second") for s in streams if s.timings.get("prompt_per_second")]
    ttft = [s.ttft_ms for s in streams if s.ttft_ms is not None]
    pct = stats.percentiles(gaps)
    rec.update(tokens=sum(len(s.arrivals) for s in streams), requests=requests,
               gen_tps=_median(gen), prompt_tps=_median(pp), ttft_ms=_median(ttft),
               itl_p50_ms=pct["p50"], itl_p95_ms=pct["p95"], itl_p99_ms=pct["p99"])
    return rec


def _median(xs: Sequence[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def compare(run, a: ServerSide, b: ServerSide, model: str, *, threads: int, rounds: int, requests: int = 2,
            n_predict: int = 64, live: LiveState | None = None, budget_s: float = 300.0, seed: int = 0,
            min_rounds: int = 3, say=print) -> dict:
    """Sessions of ``a`` and ``b`` in rounds; every metric as the paired ratio b/a with a 95% CI."""
    rng = random.Random(seed)
    sessions: list[dict] = []
    t0 = time.monotonic()
    done = 0
    for r in range(rounds):
        order = [a, b]
        rng.shuffle(order)
        for side in order:
            if live is not None:
                live.ensure(side.system, side.label)
            rec = session(run, side, model, threads=threads, requests=requests, n_predict=n_predict)
            rec["round"] = r
            sessions.append(rec)
            if say:
                say(f"[plan] {side.label}: {rec['command']}" if rec["planned"] else
                    f"round {r + 1} {side.label}: gen {rec['gen_tps'] or 0:.1f} t/s, TTFT {rec['ttft_ms'] or 0:.0f} ms,"
                    f" p99 gap {rec['itl_p99_ms']:.1f} ms")
        done = r + 1
        if run.plan or (done >= min_rounds and (time.monotonic() - t0) * (done + 1) / done > budget_s):
            break
    out: dict[str, Any] = {"a": a.label, "b": b.label, "sessions": sessions, "rounds": done,
                           "planned": run.plan, "seconds": round(time.monotonic() - t0, 1),
                           "commands": {s["label"]: s["command"] for s in sessions}}
    if run.plan:
        return out
    out["ratios"] = {}
    for m in METRICS:
        va = {s["round"]: s.get(m) for s in sessions if s["label"] == a.label}
        vb = {s["round"]: s.get(m) for s in sessions if s["label"] == b.label}
        rs = sorted(k for k in va if k in vb and va[k] and vb[k])
        out["ratios"][m] = stats.paired_ratio([va[k] for k in rs], [vb[k] for k in rs], a.label, b.label).as_dict()
    return out


def table(res: dict):
    """One row per metric: each side's median over sessions and the ratio with its CI."""
    import pandas as pd

    if res.get("planned"):
        return pd.DataFrame([{"side": k, "command": v} for k, v in (res.get("commands") or {}).items()])
    rows = []
    for m, name in METRICS.items():
        va = [s.get(m) for s in res["sessions"] if s["label"] == res["a"] and s.get(m) is not None]
        vb = [s.get(m) for s in res["sessions"] if s["label"] == res["b"] and s.get(m) is not None]
        r = res["ratios"].get(m) or {}
        rows.append({"metric": name, res["a"]: _median(va), res["b"]: _median(vb), f"{res['b']}/{res['a']}": r.get("ratio"),
                     "CI low": r.get("ci_low"), "CI high": r.get("ci_high"), "rounds": r.get("rounds"),
                     "better is": "lower" if m in LOWER_IS_BETTER else "higher"})
    return pd.DataFrame(rows)
