"""A real llama-server on loopback, for inter-token latency (jitter) measured as tokens arrive.

``LlamaServer`` is a context manager: it starts ``llama-server`` through ``runner.spawn``
(journaled; planned in plan mode) on 127.0.0.1 at a free port with ``--metrics``, waits for
``/health``, and stops it with SIGTERM on exit. ``stream(prompt, n)`` posts
``/completion`` with ``"stream": true`` and timestamps every server-sent event as it arrives;
the gaps between consecutive tokens are the inter-token latencies (p50/p95/p99 in
:func:`aios_lib.measure.stats.jitter`).
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import stats


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_sse_line(line: str) -> dict | None:
    """One ``data: {...}`` line of a server-sent event stream; None for anything else."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    body = line[5:].strip()
    if not body or body == "[DONE]":
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text from ``/metrics`` as {name: value} (``llamacpp:`` prefix kept)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


@dataclass
class Stream:
    """One streamed generation: arrival times of each token event, and the server's own timings."""

    prompt: str
    n_predict: int
    threads: int
    t_request: float  # when the request was sent (monotonic seconds)
    arrivals: list[float] = field(default_factory=list)  # monotonic seconds per content event
    pieces: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)  # llama-server's final "timings" object
    planned: bool = False

    @property
    def ttft_ms(self) -> float | None:
        return (self.arrivals[0] - self.t_request) * 1000 if self.arrivals else None

    @property
    def itl_ms(self) -> list[float]:
        """Inter-token latencies: gaps between consecutive token arrivals, in ms."""
        a = self.arrivals
        return [(a[i] - a[i - 1]) * 1000 for i in range(1, len(a))]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def summary(self) -> dict:
        j = stats.jitter(self.itl_ms)
        tps = (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0]) if len(self.arrivals) > 2 else None
        return {"tokens": len(self.arrivals), "ttft_ms": self.ttft_ms, "itl_ms": j, "client_tg_ts": tps,
                "server_predicted_per_second": self.timings.get("predicted_per_second"),
                "server_predicted_per_token_ms": self.timings.get("predicted_per_token_ms"), "threads": self.threads}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["itl_ms"] = self.itl_ms
        d["summary"] = self.summary() if not self.planned else None
        d.pop("arrivals")
        return d


class LlamaServer:
    """``with LlamaServer(run, server_bin, model_path, threads=2) as srv: srv.stream(...)``."""

    def __init__(self, run, binary: str | Path, model: str | Path, *, threads: int, port: int | None = None,
                 ctx: int = 2048, parallel: int = 1, extra: list[str] | None = None, ready_timeout: float = 120):
        self.run, self.binary, self.model, self.threads = run, str(binary), str(model), threads
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [self.binary, "-m", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--metrics",
                     "-t", str(threads), "-c", str(ctx), "-np", str(parallel), *(extra or [])]
        self.ready_timeout = ready_timeout
        self.proc = None
        self.ready_s: float | None = None

    @property
    def planned(self) -> bool:
        return self.proc is None or self.proc.planned

    def start(self) -> "LlamaServer":
        self.proc = self.run.runner.spawn(self.argv, note=f"llama-server on {self.url} (latency measurement)")
        if self.proc.planned:
            return self
        import requests

        t0 = time.monotonic()
        while True:
            if not self.proc.alive():
                res = self.proc.stop()
                tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-10:])
                raise RuntimeError(f"llama-server exited with {res.rc} before it was ready:\n{tail}")
            try:
                r = requests.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > self.ready_timeout:
                self.proc.stop()
                raise TimeoutError(f"llama-server not healthy at {self.url}/health after {self.ready_timeout:.0f} s")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - t0
        return self

    def stop(self):
        return self.proc.stop() if self.proc is not None else None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stream(self, prompt: str, n_predict: int = 128, seed: int = 0, temperature: float = 0.0) -> Stream:
        """POST /completion with stream=true; time each token's arrival."""
        s = Stream(prompt, n_predict, self.threads, time.monotonic(), planned=self.planned)
        if self.planned:
            return s
        import requests

        body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "temperature": temperature, "seed": seed,
                "cache_prompt": False, "ignore_eos": True}
        s.t_request = time.monotonic()
        with requests.post(self.url + "/completion", json=body, stream=True, timeout=600) as r:
            r.raise_for_status()
            # chunk_size=None: hand over each chunk as it arrives (one SSE event per token)
            for raw in r.iter_lines(chunk_size=None, decode_unicode=False):
                now = time.monotonic()
                ev = parse_sse_line(raw.decode("utf-8", "replace")) if raw else None
                if ev is None:
                    continue
                if ev.get("content") or (not ev.get("stop") and "content" in ev):
                    s.arrivals.append(now)
                    s.pieces.append(ev.get("content", ""))
                if ev.get("stop"):
                    s.timings = ev.get("timings") or {}
                    break
        return s

    def metrics(self) -> dict[str, float]:
        if self.planned:
            return {}
        import requests

        r = requests.get(self.url + "/metrics", timeout=10)
        r.raise_for_status()
        return parse_metrics(r.text)


def latency(run, binary, model, *, threads: int, n_predict: int = 128, prompts: list[str] | None = None,
            repeats: int = 2) -> dict:
    """Start a server, stream ``repeats`` generations per prompt, stop it; all inter-token gaps."""
    prompts = prompts or ["The history of the city of Paris begins", "Write a short story about a lighthouse keeper."]
    streams: list[Stream] = []
    with LlamaServer(run, binary, model, threads=threads) as srv:
        if not srv.planned:
            srv.stream(prompts[0], 8)  # warm-up, not kept
        for _ in range(repeats):
            for p in prompts:
                streams.append(srv.stream(p, n_predict))
        metrics = srv.metrics()
        ready_s = srv.ready_s
        argv = srv.argv
    planned = srv.planned
    itl = [x for s in streams for x in s.itl_ms]
    return {"planned": planned, "command": " ".join(argv), "threads": threads, "n_predict": n_predict,
            "ready_s": ready_s, "streams": [s.to_dict() for s in streams],
            "itl_ms": itl, "jitter": stats.jitter(itl) if itl else None,
            "ttft_ms": [s.ttft_ms for s in streams if s.ttft_ms is not None],
            "metrics": {k: v for k, v in metrics.items() if k.startswith("llamacpp:")}}
