"""Replicas: one llama-server per host behind the load balancer, and what they add up to.

A replica is started with phase 06's service flags (threads, context, slots, ``--metrics``, the
flags phase 05 kept) through the runner, wrapped by ``wrap`` into a process of its host (a test
host's namespaces and cpuset, or ``ssh`` on a real one); it must answer ``/health`` before it
counts. :func:`scaling_point` measures 1..N replicas behind HAProxy with the bounded load
generator; :func:`kill_test` kills one replica in the middle of the load and counts every request.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .balancer import Backend, Balancer
from .load import generate, stream_one, Request

PORT = 8080


def replica_argv(binary: str | Path, model: str | Path, address: str, port: int = PORT, *, threads: int = 1,
                 slots: int = 2, ctx_per_slot: int = 1024, extra: list[str] | None = None) -> list[str]:
    """llama-server as phase 06's unit runs it (-t, -c, -np, --metrics, kept flags), listening on
    the host's fleet address only. ``-c`` is the whole KV cache, shared by the slots."""
    return [str(binary), "-m", str(model), "--host", address, "--port", str(port), "-t", str(threads),
            "-c", str(ctx_per_slot * slots), "-np", str(slots), "--metrics", *(extra or [])]


@dataclass
class Replica:
    name: str
    address: str
    argv: list[str]
    wrap: Callable[[list[str]], list[str]] = field(default=lambda a: a, repr=False)
    port: int = PORT
    slots: int = 2
    proc: object = None
    ready_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def planned(self) -> bool:
        return self.proc is None or self.proc.planned

    def start(self, runner, ready_timeout: float = 120) -> "Replica":
        self.proc = runner.spawn(self.wrap(self.argv), note=f"replica {self.name}: llama-server on {self.url}")
        if self.proc.planned:
            return self
        import requests

        t0 = time.monotonic()
        while time.monotonic() - t0 < ready_timeout:
            if not self.proc.alive():
                res = self.proc.stop()
                raise RuntimeError(f"replica {self.name} exited with {res.rc} before it was ready: "
                                   f"{(res.stderr or res.stdout).strip()[-800:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    self.ready_s = time.monotonic() - t0
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.proc.stop()
        raise TimeoutError(f"replica {self.name} not healthy at {self.url}/health after {ready_timeout:.0f} s")

    def kill(self, runner) -> float:
        """SIGKILL (as a crash or an OOM kill would): no graceful shutdown, requests in flight break."""
        runner.change(["kill", "-KILL", str(self.proc.pid)], note=f"replica {self.name} killed mid-load")
        return time.monotonic()

    def stop(self):
        return self.proc.stop() if self.proc is not None else None

    def backend(self) -> Backend:
        return Backend(self.name, self.address, self.port, self.slots)


def warm_up(url: str, n: int, n_predict: int = 4) -> None:
    """A few short requests first (page cache, first allocations), not measured."""
    generate(url, requests=n, concurrency=n, n_predict=n_predict, deadline_s=60)


def scaling_point(runner, d: str | Path, replicas: list[Replica], *, per_replica: int = 6, n_predict: int = 32,
                  queue_factor: int = 2, deadline_s: float = 180) -> dict:
    """``per_replica`` x N requests through HAProxy over ``replicas``, ``queue_factor`` x the slots
    in flight (so the balancer queues the rest): aggregate generation t/s, p50/p99 time to first
    token, and HAProxy's per-server counts."""
    slots = sum(r.slots for r in replicas)
    with Balancer(runner, d, [r.backend() for r in replicas]) as lb:
        if lb.planned:
            return {"replicas": len(replicas), "planned": True}
        warm_up(lb.url, slots)
        res = generate(lb.url, requests=per_replica * len(replicas), concurrency=queue_factor * slots,
                       n_predict=n_predict, deadline_s=deadline_s)
        st = lb.stats()
    s = res.summary()
    return {"replicas": len(replicas), "names": [r.name for r in replicas], "slots": slots, **s,
            "haproxy": {k: {f: v.get(f) for f in ("status", "stot", "smax", "qmax", "wretr", "wredis", "slim")}
                        for k, v in st.items()}}


def efficiency(aggregate: dict[int, float]) -> dict[int, float]:
    """Scaling efficiency: aggregate t/s at N / (N x aggregate t/s at 1)."""
    one = aggregate.get(1)
    return {n: (v / (n * one) if one and math.isfinite(one) and one > 0 else float("nan")) for n, v in aggregate.items()}


def kill_test(runner, d: str | Path, replicas: list[Replica], victim: str, *, requests: int = 24,
              concurrency: int | None = None, n_predict: int = 48, kill_after_ok: int = 4,
              check_interval_ms: int = 500, fall: int = 2, deadline_s: float = 180) -> dict:
    """Load through HAProxy; once ``kill_after_ok`` requests are done, SIGKILL replica ``victim``.

    Counted: every request (ok / failed / not sent) and which replica served it; the requests in
    flight on the victim when it died; HAProxy's retries and redispatches; how long until HAProxy
    marked the victim DOWN (at most ``fall`` x ``check_interval_ms`` plus one check's timeout is
    expected) and how many sessions it gave the victim after that (0 expected)."""
    target = next(r for r in replicas if r.name == victim)
    slots = sum(r.slots for r in replicas)
    concurrency = concurrency or 2 * slots
    with Balancer(runner, d, [r.backend() for r in replicas], check_interval_ms=check_interval_ms, fall=fall) as lb:
        warm_up(lb.url, slots)
        before = lb.stats()

        def during(reqs: list[Request], t0: float) -> list[dict]:
            while sum(r.outcome == "ok" for r in reqs) < kill_after_ok and time.monotonic() - t0 < deadline_s:
                time.sleep(0.02)
            # which replica a request is on is known only once its response headers arrive (with its
            # first token): the requests in flight now are kept, and those on the victim found after
            in_flight = [r.i for r in reqs if r.t_sent is not None and r.t_done is None]
            st = lb.stats().get(victim, {})
            t_kill = target.kill(runner)
            events = [{"event": "killed", "replica": victim, "at_s": round(t_kill - t0, 3),
                       "in_flight": in_flight, "sessions_now": st.get("scur")}]
            while time.monotonic() - t_kill < 30:
                st = lb.stats().get(victim, {})
                if str(st.get("status", "")).startswith("DOWN"):
                    events.append({"event": "marked down", "replica": victim,
                                   "after_kill_s": round(time.monotonic() - t_kill, 3), "stot_at_down": st.get("stot")})
                    break
                time.sleep(0.05)
            return events

        res = generate(lb.url, requests=requests, concurrency=concurrency, n_predict=n_predict,
                       deadline_s=deadline_s, during=during)
        after = lb.stats()
    down = next((e for e in res.events if e["event"] == "marked down"), None)
    killed = next((e for e in res.events if e["event"] == "killed"), {})
    c = res.counts()
    failed = [r for r in res.results if r.outcome == "failed"]
    v_after = after.get(victim, {})
    return {
        "requests": requests, "concurrency": concurrency, "n_predict": n_predict, "victim": victim,
        "counts": c, "by_replica": res.by_replica(), "events": res.events,
        "in_flight_on_victim": [r.i for r in res.results if r.i in set(killed.get("in_flight", []))
                                and r.replica == victim],
        "failed": [{"i": r.i, "replica": r.replica, "tokens": r.tokens, "error": r.error} for r in failed],
        "retries": sum(int(v.get("wretr") or 0) for k, v in after.items() if k != "BACKEND")
        - sum(int(v.get("wretr") or 0) for k, v in before.items() if k != "BACKEND"),
        "redispatches": sum(int(v.get("wredis") or 0) for k, v in after.items() if k != "BACKEND")
        - sum(int(v.get("wredis") or 0) for k, v in before.items() if k != "BACKEND"),
        "marked_down_after_s": down["after_kill_s"] if down else None,
        "check_budget_s": fall * check_interval_ms / 1000 + 2.0,
        "sessions_to_victim_after_down": (int(v_after.get("stot") or 0) - int(down["stot_at_down"] or 0)) if down else None,
        "victim_status_at_end": v_after.get("status"),
        "summary": res.summary(),
    }


def one_completion(url: str, prompt: str, n_predict: int, seed: int = 0, timeout: float = 300) -> Request:
    """One greedy completion (temperature 0, fixed seed), streamed; text and server timings."""
    return stream_one(url, prompt, n_predict, timeout, time.monotonic(), Request(0), seed=seed)
