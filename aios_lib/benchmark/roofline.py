"""Memory bandwidth and the token-generation roofline.

Generating one token reads (about) every weight once, so tg speed is bounded by
``bandwidth / bytes per token``. ``bytes per token`` is taken as llama-bench's ``model_size``
(the bytes of all tensors; the file size is a hair larger). Efficiency =
``tg t/s x bytes per token / bandwidth``: near 1 the model is memory-bound; far below, per-token
overhead (thread sync, small matrix kernels, cache effects) dominates, as it does for a 135M model.

The bandwidth comes from a small C kernel (``aios_lib/data/stream.c``: read, copy, triad over
arrays far larger than the caches), compiled through the runner with the same
``-O3 -march=native`` flags as llama.cpp (plus ``-fopenmp``), cached by a hash of source, flags
and compiler version. numpy measures less here (one thread, temporaries).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.paths import PACKAGE_DIR, cache_dir
from ..facts import gather, toolchain

SOURCE = PACKAGE_DIR / "data" / "stream.c"
CFLAGS = ["-O3", "-march=native", "-fopenmp"]


@dataclass
class StreamBuild:
    binary: Path
    key: str
    compiler: str
    flags: list[str]
    cached: bool
    planned: bool


def build_stream(run, cc: str = "gcc") -> StreamBuild:
    """Compile stream.c (cached under ~/.cache/synapse/stream/<key>)."""
    compiler = gather(run.runner, toolchain.version_line(cc)) or cc  # hashed into the key
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + json.dumps([compiler, CFLAGS]).encode()).hexdigest()[:16]
    d = cache_dir("stream", key)
    binary = d / "stream"
    if binary.exists():
        return StreamBuild(binary, key, compiler, CFLAGS, True, False)
    tmp = d / "stream.part"
    res = run.runner.work([cc, *CFLAGS, "-o", str(tmp), str(SOURCE)], note="bandwidth kernel (roofline)")
    if res.planned:
        return StreamBuild(binary, key, compiler, CFLAGS, False, True)
    tmp.replace(binary)
    return StreamBuild(binary, key, compiler, CFLAGS, False, False)


def parse_stream(text: str) -> dict:
    """The JSON line stream prints."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON in stream output: {text[:200]!r}")


def measure_bandwidth(run, threads: list[int], mib: int = 256, reps: int = 5) -> dict:
    """Bandwidth per thread count (best of ``reps``); ``best`` is the highest read GB/s."""
    sb = build_stream(run)
    out = {"build": asdict(sb), "mib_per_array": mib, "reps": reps, "by_threads": [], "planned": sb.planned}
    for t in threads:
        res = run.runner.work([str(sb.binary), str(mib), str(reps)], env={"OMP_NUM_THREADS": str(t),
                              "OMP_PROC_BIND": "spread"}, note=f"memory bandwidth, {t} thread(s)", quiet=True)
        if res.planned:
            out["planned"] = True
            continue
        out["by_threads"].append(parse_stream(res.stdout))
    if out["by_threads"]:
        best = max(out["by_threads"], key=lambda r: r["read_gbs"])
        out["best"] = {"read_gbs": best["read_gbs"], "threads": best["threads"],
                       "triad_gbs": max(r["triad_gbs"] for r in out["by_threads"]),
                       "copy_gbs": max(r["copy_gbs"] for r in out["by_threads"])}
    return out


@dataclass
class RooflinePoint:
    label: str
    tg_ts: float
    bytes_per_token: int
    bandwidth_gbs: float
    threads: int | None = None
    synthetic: bool = False

    @property
    def achieved_gbs(self) -> float:
        return self.tg_ts * self.bytes_per_token / 1e9

    @property
    def efficiency(self) -> float:
        return self.achieved_gbs / self.bandwidth_gbs if self.bandwidth_gbs else float("nan")

    @property
    def ceiling_ts(self) -> float:
        """tg t/s if every token only had to stream the weights at full bandwidth."""
        return self.bandwidth_gbs * 1e9 / self.bytes_per_token if self.bytes_per_token else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(achieved_gbs=self.achieved_gbs, efficiency=self.efficiency, ceiling_ts=self.ceiling_ts)
        return d


def verdict(p: RooflinePoint) -> str:
    e = p.efficiency
    if e != e:
        return "no data"
    if e < 0.4:
        return (f"{p.label}: {e:.0%} of bandwidth: overhead-bound (per-token costs, not memory, limit tg; "
                "a faster memory system would barely help)")
    if e < 0.8:
        return f"{p.label}: {e:.0%} of bandwidth: partly memory-bound"
    return f"{p.label}: {e:.0%} of bandwidth: memory-bound (close to the roofline)"


def points_from(experiments: list, bandwidth_gbs: float) -> list[RooflinePoint]:
    """A roofline point for every (config, tg test) of the given Experiments (measure.experiment.Experiment)."""
    from ..measure import stats

    pts = []
    for ex in experiments:
        if ex is None or ex.planned:
            continue
        for c in ex.configs:
            for test in ex.tests():
                if not test.startswith("tg"):
                    continue
                s = stats.summarize(ex.samples(c["label"], test))
                size = next((row.get("model_size") for rec in ex.records if rec["label"] == c["label"]
                             for row in rec.get("rows", []) if row.get("model_size")), None)
                if s.n and size:
                    pts.append(RooflinePoint(f"{ex.name}: {c['label']} {test}", s.mean, int(size), bandwidth_gbs,
                                             c.get("threads"), synthetic="synthetic" in ex.name))
    return pts
