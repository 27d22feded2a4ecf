"""Pure parsing of llama-server's ``/metrics`` and the token rates computed from it.

llama-server (started with ``--metrics``) exposes Prometheus text. The counters that matter
(llama.cpp 0c1e570, ``tools/server/server-task.cpp``)::

    llamacpp:prompt_tokens_total             prompt tokens processed (cached ones excluded)
    llamacpp:prompt_seconds_total            time spent on them
    llamacpp:tokens_predicted_total          tokens generated
    llamacpp:tokens_predicted_seconds_total  time spent generating them
    llamacpp:requests_processing / requests_deferred   gauges

The ``*_tokens_seconds`` gauges are averages over a window the server chooses (since the last
scrape in this build, since start in older ones), so the panel does not show them as "tokens/s":
it takes the change of the counters between two of its own polls, Δtokens / Δseconds.

Facts about the counters that shape the code below:

* they advance when a request *finishes* (the slot is released), not token by token, so a poll
  with no finished request sees no change: the panel shows that as idle, not as 0 t/s;
* they are printed with C++ ``operator<<`` defaults, i.e. 6 significant digits: past 10^6 tokens a
  total reads ``1.23457e+06``, so a small delta is below the printed resolution. The meter then
  keeps its baseline and waits until the delta is large enough to be meaningful;
* a server restart resets them: a counter that goes down starts a new baseline.

Metric names differ between builds and exporters (``llamacpp:`` or ``llamacpp_`` prefix, colons
or underscores, older aliases), so every name is normalised and looked up through ALIASES.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from prometheus_client.parser import text_string_to_metric_families

#: Prefixes stripped from a metric name (after ':' has become '_').
PREFIXES = ("llamacpp_", "llama_cpp_", "llama_server_", "llamaserver_", "llama_")

#: canonical name -> (alternative normalised names, scale to the canonical unit)
ALIASES: dict[str, list[tuple[str, float]]] = {
    "prompt_tokens_total": [("prompt_tokens_total", 1.0), ("prompt_tokens_processed_total", 1.0),
                            ("n_prompt_tokens_processed_total", 1.0), ("prompt_tokens", 1.0)],
    "prompt_seconds_total": [("prompt_seconds_total", 1.0), ("prompt_processing_seconds_total", 1.0),
                             ("t_prompt_processing_seconds_total", 1.0), ("prompt_seconds", 1.0),
                             ("prompt_milliseconds_total", 1e-3), ("t_prompt_processing_total", 1e-3)],
    "tokens_predicted_total": [("tokens_predicted_total", 1.0), ("predicted_tokens_total", 1.0),
                               ("n_tokens_predicted_total", 1.0), ("tokens_predicted", 1.0)],
    "tokens_predicted_seconds_total": [("tokens_predicted_seconds_total", 1.0),
                                       ("predicted_seconds_total", 1.0),
                                       ("tokens_generation_seconds_total", 1.0),
                                       ("tokens_predicted_milliseconds_total", 1e-3),
                                       ("t_tokens_generation_total", 1e-3)],
    "requests_processing": [("requests_processing", 1.0), ("n_requests_processing", 1.0),
                            ("requests_running", 1.0)],
    "requests_deferred": [("requests_deferred", 1.0), ("n_requests_deferred", 1.0),
                          ("requests_pending", 1.0), ("requests_waiting", 1.0)],
    "n_decode_total": [("n_decode_total", 1.0), ("decode_total", 1.0)],
    "prompt_tokens_cached_total": [("prompt_tokens_cached_total", 1.0)],
    # the server's own averaged gauges (shown for reference only)
    "prompt_tokens_seconds": [("prompt_tokens_seconds", 1.0)],
    "predicted_tokens_seconds": [("predicted_tokens_seconds", 1.0)],
    "n_busy_slots_per_decode": [("n_busy_slots_per_decode", 1.0)],
    "kv_cache_usage_ratio": [("kv_cache_usage_ratio", 1.0)],
}


def normalise(name: str) -> str:
    """``llamacpp:tokens_predicted_total`` -> ``tokens_predicted_total`` (also ``llamacpp_...``)."""
    n = name.strip().lower().replace(":", "_")
    for p in PREFIXES:
        if n.startswith(p):
            n = n[len(p):]
            break
    return n


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {normalised sample name: value}.

    Uses prometheus_client's parser (a malformed exposition raises ValueError). Labelled samples
    of one name (e.g. per draft position) are summed; NaN samples are dropped.
    """
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            v = float(s.value)
            if math.isnan(v):
                continue
            key = normalise(s.name)
            out[key] = out.get(key, 0.0) + v if s.labels else v
    return out


def pick(values: dict[str, float], canonical: str) -> float | None:
    """The value of ``canonical`` under any of its known names (scaled to its unit), or None."""
    for alt, scale in ALIASES.get(canonical, [(canonical, 1.0)]):
        for cand in (alt, alt + "_total") if not alt.endswith("_total") else (alt,):
            if cand in values:
                return values[cand] * scale
    return None


def canonical_metrics(values: dict[str, float]) -> dict[str, float]:
    """Every canonical metric found in ``values``."""
    out = {}
    for c in ALIASES:
        v = pick(values, c)
        if v is not None:
            out[c] = v
    return out


def printed_resolution(value: float, digits: int = 6) -> float:
    """The step of a value printed with ``digits`` significant digits (C++ stream default)."""
    if value == 0:
        return 0.0
    return 10 ** (math.floor(math.log10(abs(value))) - (digits - 1))


@dataclass
class Scrape:
    """One poll of /metrics: wall time (seconds) and the canonical values found."""

    t: float
    values: dict[str, float]

    @classmethod
    def from_text(cls, text: str, t: float) -> "Scrape":
        return cls(t, canonical_metrics(parse_metrics(text)))

    def get(self, name: str) -> float | None:
        return self.values.get(name)


@dataclass
class Rate:
    """Tokens per second over one window between two scrapes."""

    tokens: float = 0.0  # tokens counted in the window
    seconds: float = 0.0  # server time spent on them (the *_seconds_total delta)
    wall: float = 0.0  # wall time of the window

    @property
    def tps(self) -> float | None:
        """Tokens per second of processing time (what the panel calls t/s); None when idle."""
        if self.seconds <= 0 or self.tokens <= 0:
            return None
        return self.tokens / self.seconds

    @property
    def throughput(self) -> float:
        """Tokens per second of wall time (how busy the server was)."""
        return self.tokens / self.wall if self.wall > 0 else 0.0


@dataclass
class RateUpdate:
    """What one new scrape told the meter."""

    generation: Rate | None  # None: no delta yet (first scrape, reset, or below printed resolution)
    prompt: Rate | None
    reset: bool = False


@dataclass
class _Track:
    tokens_key: str
    seconds_key: str
    base: Scrape | None = None
    last: Rate | None = None  # the last window that had work in it
    last_t: float | None = None

    def update(self, s: Scrape) -> tuple[Rate | None, bool]:
        tok, sec = s.get(self.tokens_key), s.get(self.seconds_key)
        if tok is None or sec is None:
            return None, False
        if self.base is None:
            self.base = s
            return None, False
        btok, bsec = self.base.get(self.tokens_key), self.base.get(self.seconds_key)
        if btok is None or bsec is None or tok < btok or sec < bsec:  # restarted server
            self.base = s
            return None, True
        dtok, dsec, dwall = tok - btok, sec - bsec, s.t - self.base.t
        if dtok == 0 and dsec == 0:  # idle window
            self.base = s
            return Rate(0.0, 0.0, dwall), False
        # a delta within a few printed steps of either counter is noise: wait for more
        if dtok < 20 * printed_resolution(tok) or dsec < 20 * printed_resolution(sec):
            return None, False
        r = Rate(dtok, dsec, dwall)
        self.base = s
        if r.tps is not None:
            self.last, self.last_t = r, s.t
        return r, False


class RateMeter:
    """Feeds on successive scrapes; keeps the current rates and a time-bounded history."""

    def __init__(self, window_s: float = 300.0):
        self.window_s = window_s
        self.gen = _Track("tokens_predicted_total", "tokens_predicted_seconds_total")
        self.prompt = _Track("prompt_tokens_total", "prompt_seconds_total")
        #: (wall time, generation t/s or 0.0 when idle) per poll, last ``window_s`` seconds
        self.history: deque[tuple[float, float]] = deque()
        self.latest: Scrape | None = None
        self.resets = 0

    def update(self, s: Scrape) -> RateUpdate:
        g, r1 = self.gen.update(s)
        p, r2 = self.prompt.update(s)
        self.latest = s
        if r1 or r2:
            self.resets += 1
        if g is not None:
            self.history.append((s.t, g.tps or 0.0))
        while self.history and self.history[0][0] < s.t - self.window_s:
            self.history.popleft()
        return RateUpdate(g, p, reset=r1 or r2)

    def forget_baseline(self) -> None:
        """After the server was unreachable: the next scrape starts fresh windows."""
        self.gen.base = None
        self.prompt.base = None

    @property
    def sparkline(self) -> list[float]:
        return [v for _, v in self.history]

    def cumulative(self, which: str = "gen") -> float | None:
        """Tokens/s since the server started (total tokens over total seconds)."""
        s = self.latest
        if s is None:
            return None
        tr = self.gen if which == "gen" else self.prompt
        tok, sec = s.get(tr.tokens_key), s.get(tr.seconds_key)
        if not tok or not sec:
            return None
        return tok / sec


def missing_core_metrics(values: Iterable[str]) -> list[str]:
    """Canonical metrics the panel needs that a scrape lacks (shown as a hint in the panel)."""
    have = set(values)
    need = ["tokens_predicted_total", "tokens_predicted_seconds_total", "prompt_tokens_total",
            "prompt_seconds_total", "requests_processing", "requests_deferred"]
    return [n for n in need if n not in have]


def format_rate(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


_SIZE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"]


def format_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for u in _SIZE_UNITS:
        if abs(n) < 1024 or u == _SIZE_UNITS[-1]:
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
    return f"{n:.1f} TiB"


_QUANT_RE = re.compile(r"(IQ\d_[A-Z0-9_]+|Q\d_K(?:_[SML])?|Q\d_\d|Q\d_K|BF16|F16|F32|TQ\d_\d)", re.I)


def quant_from_name(text: str | None) -> str | None:
    """Quantisation as a llama.cpp type name from a file name or ftype string, e.g. ``Q4_K_M``."""
    if not text:
        return None
    m = _QUANT_RE.search(text.replace("-", "_").replace(" ", ""))
    return m.group(1).upper() if m else None


# ---- live progress from /slots -----------------------------------------------------------------
def slot_progress(slots) -> dict[tuple[int, int], int]:
    """/slots JSON -> {(slot id, task id): tokens decoded so far} for the slots generating now.

    The counters of /metrics only move when a request finishes; /slots shows a running request's
    ``next_token[0].n_decoded`` as it grows, so a long generation is visible while it runs.
    """
    out: dict[tuple[int, int], int] = {}
    if not isinstance(slots, list):
        return out
    for s in slots:
        if not isinstance(s, dict) or not s.get("is_processing"):
            continue
        nt = s.get("next_token")
        nt = nt[0] if isinstance(nt, list) and nt else nt
        if not isinstance(nt, dict) or "n_decoded" not in nt:
            continue
        out[(int(s.get("id", -1)), int(s.get("id_task", -1)))] = int(nt["n_decoded"])
    return out


def live_rate(prev: dict[tuple[int, int], int] | None, cur: dict[tuple[int, int], int], dt: float) -> float | None:
    """Tokens per wall second decoded by the requests running in both polls; None if none were."""
    if not prev or dt <= 0:
        return None
    same = [k for k in cur if k in prev and cur[k] >= prev[k]]
    if not same:
        return None
    return sum(cur[k] - prev[k] for k in same) / dt
