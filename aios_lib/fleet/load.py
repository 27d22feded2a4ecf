"""A bounded load generator: ``requests`` streamed completions, ``concurrency`` at a time.

Each request is the project's streaming client (server-sent events parsed by
:func:`aios_lib.measure.server.parse_sse_line`, every token's arrival timed), sent to the load
balancer. It stops by itself: after ``requests`` requests or ``deadline_s`` seconds, whichever
comes first (requests not started by then are counted as not sent). Every request ends in exactly
one outcome: ``ok`` (the server's final event arrived), ``failed`` (an HTTP error, a broken or
truncated stream: what a client of a replica that died sees) or ``not sent``.

Only loopback and the fleet's own addresses are ever targets (the caller passes the balancer's URL).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ..measure import stats
from ..measure.server import parse_sse_line

PROMPTS = ["The history of the city of Paris begins", "Write a short story about a lighthouse keeper.",
           "Explain how a bicycle stays upright.", "List three facts about the Moon."]


@dataclass
class Request:
    i: int
    outcome: str = "not sent"  # ok | failed | not sent
    replica: str | None = None  # the X-Synapse-Replica header: which replica served it
    t_sent: float | None = None  # seconds since the load started
    t_first: float | None = None
    t_done: float | None = None
    tokens: int = 0
    status: int | None = None
    error: str | None = None
    server_tps: float | None = None  # llama-server's own predicted_per_second
    server_prompt_tps: float | None = None
    text: str = ""

    @property
    def ttft_ms(self) -> float | None:
        return (self.t_first - self.t_sent) * 1000 if self.t_first is not None and self.t_sent is not None else None


def stream_one(url: str, prompt: str, n_predict: int, timeout: float, t0: float, req: Request,
               seed: int = 0, extra: dict | None = None) -> Request:
    import requests

    body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "temperature": 0.0, "seed": seed,
            "cache_prompt": False, "ignore_eos": True, **(extra or {})}
    req.t_sent = time.monotonic() - t0
    pieces = []
    try:
        with requests.post(url + "/completion", json=body, stream=True, timeout=timeout) as r:
            req.status = r.status_code
            req.replica = r.headers.get("X-Synapse-Replica")
            if r.status_code != 200:
                req.outcome, req.error = "failed", f"HTTP {r.status_code}"
                return req
            done = False
            for raw in r.iter_lines(chunk_size=None, decode_unicode=False):
                ev = parse_sse_line(raw.decode("utf-8", "replace")) if raw else None
                if ev is None:
                    continue
                if ev.get("content"):
                    if req.t_first is None:
                        req.t_first = time.monotonic() - t0
                    req.tokens += 1
                    pieces.append(ev["content"])
                if ev.get("stop"):
                    t = ev.get("timings") or {}
                    req.server_tps, req.server_prompt_tps = t.get("predicted_per_second"), t.get("prompt_per_second")
                    done = True
                    break
            req.outcome = "ok" if done else "failed"
            if not done:
                req.error = f"stream ended after {req.tokens} token(s) without the final event"
    except Exception as e:  # a connection reset by a dying replica, a timeout
        req.outcome, req.error = "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        req.t_done = time.monotonic() - t0
        req.text = "".join(pieces)
    return req


@dataclass
class LoadResult:
    url: str
    requests: int
    concurrency: int
    n_predict: int
    wall_s: float
    results: list[Request] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # what happened during the load (a replica killed...)

    def counts(self) -> dict[str, int]:
        c = {"sent": 0, "ok": 0, "failed": 0, "not sent": 0}
        for r in self.results:
            c[r.outcome] += 1
            c["sent"] += r.outcome != "not sent"
        return c

    def by_replica(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            if r.outcome == "not sent":
                continue
            d = out.setdefault(r.replica or "(no response)", {"ok": 0, "failed": 0})
            d[r.outcome] += 1
        return out

    def summary(self) -> dict:
        ok = [r for r in self.results if r.outcome == "ok"]
        tokens = sum(r.tokens for r in ok)
        ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
        span = (max(r.t_done for r in ok) - min(r.t_sent for r in ok)) if ok else float("nan")
        p = stats.percentiles(ttft, (50, 99)) if ttft else {"p50": float("nan"), "p99": float("nan")}
        return {"requests": self.requests, "concurrency": self.concurrency, "n_predict": self.n_predict,
                **self.counts(), "tokens": tokens, "wall_s": round(self.wall_s, 3),
                "aggregate_tps": tokens / span if ok and span > 0 else float("nan"),
                "ttft_p50_ms": p.get("p50"), "ttft_p99_ms": p.get("p99"), "by_replica": self.by_replica()}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "events": self.events,
                "results": [{**asdict(r), "ttft_ms": r.ttft_ms} for r in self.results]}


def generate(url: str, *, requests: int, concurrency: int, n_predict: int = 32, deadline_s: float = 120,
             request_timeout_s: float = 120, prompts: list[str] | None = None,
             during=None) -> LoadResult:
    """Send ``requests`` streamed completions to ``url``, ``concurrency`` at a time, within
    ``deadline_s``. ``during(results, t0)``, when given, runs in a thread of its own while the load
    runs (e.g. kills a replica once some requests are done) and returns a list of events to record."""
    if requests < 1 or concurrency < 1:
        raise ValueError("requests and concurrency must be at least 1")
    prompts = prompts or PROMPTS
    reqs = [Request(i) for i in range(requests)]
    t0 = time.monotonic()
    stop_at = t0 + deadline_s
    events: list[dict] = []
    side = None
    if during is not None:
        side = threading.Thread(target=lambda: events.extend(during(reqs, t0) or []), daemon=True)
        side.start()

    def one(r: Request) -> Request:
        if time.monotonic() >= stop_at:
            return r  # not sent: the deadline passed while it queued
        return stream_one(url, prompts[r.i % len(prompts)], n_predict, min(request_timeout_s, max(1.0, stop_at -
                          time.monotonic() + 5)), t0, r, seed=r.i)

    with ThreadPoolExecutor(max_workers=concurrency) as ex:
        list(ex.map(one, reqs))
    wall = time.monotonic() - t0
    if side is not None:
        side.join(timeout=30)
    return LoadResult(url, requests, concurrency, n_predict, wall, reqs, events)
