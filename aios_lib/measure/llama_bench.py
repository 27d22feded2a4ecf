"""One llama-bench invocation: its configuration and argv, the flags the built binary accepts, its
JSON, and the machine's load around it.

Every measurement is one ``llama-bench -o json`` invocation through ``runner.work`` (planned in
plan mode), with ``-t`` always explicit and every sample kept (``samples_ts``/``samples_ns``).
llama-bench does one warm-up run per test before its ``-r`` repetitions (unless
``--no-warmup``), so the samples never include a cold first run. Before and after each
invocation the runner reads ``/proc/stat`` and ``/proc/loadavg``; the CPU time other processes
used during the run (busy time minus the benchmark's own CPU time) marks a run as contended.
On 2 cores another busy process cuts 2-thread results several-fold, so the reports show
contended runs instead of hiding them.
"""
from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..facts import gather, load as load_facts

#: Cores' worth of CPU time other processes may use during a run before it counts as contended.
CONTENDED_CORES = 0.2

#: llama-bench JSON fields kept per row (besides the samples)
ROW_FIELDS = ("build_commit", "build_number", "cpu_info", "backends", "model_filename", "model_type", "model_size",
              "model_n_params", "n_batch", "n_ubatch", "n_threads", "poll", "type_k", "type_v", "flash_attn",
              "load_mode", "repack", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts",
              "stddev_ts", "samples_ns", "samples_ts")

# ---- llama-bench: argv, JSON (its flags: :mod:`aios_lib.facts.llama`) ---------------------------
def test_name(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    if n_gen == 0:
        name = f"pp{n_prompt}"
    elif n_prompt == 0:
        name = f"tg{n_gen}"
    else:
        name = f"pp{n_prompt}+tg{n_gen}"
    return name + (f"@d{n_depth}" if n_depth else "")


def parse_bench_json(text: str) -> list[dict]:
    """Rows of ``llama-bench -o json`` (or ``-o jsonl``), each with ``test`` and its samples."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        raw = json.loads(text)
    else:
        raw = [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]
    rows = []
    for r in raw:
        row = {k: r.get(k) for k in ROW_FIELDS if k in r}
        row["samples_ts"] = [float(x) for x in r.get("samples_ts") or []]
        row["samples_ns"] = [int(x) for x in r.get("samples_ns") or []]
        row["test"] = test_name(int(r.get("n_prompt") or 0), int(r.get("n_gen") or 0), int(r.get("n_depth") or 0))
        rows.append(row)
    return rows


@dataclass
class BenchConfig:
    """One llama-bench configuration. ``flags`` are extra options, e.g. {"-fa": "on"}."""

    label: str
    bench: str  # path of llama-bench
    model: str  # path of the GGUF
    threads: int
    prompt: list[int] = field(default_factory=lambda: [512])
    gen: list[int] = field(default_factory=lambda: [128])
    reps: int = 5
    flags: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def argv(self) -> list[str]:
        a = [self.bench, "-m", self.model,
             "-p", ",".join(str(p) for p in self.prompt) or "0",
             "-n", ",".join(str(n) for n in self.gen) or "0",
             "-r", str(self.reps), "-t", str(self.threads)]
        for k, v in self.flags.items():
            a += [k, str(v)]
        return a + ["-o", "json"]

    def shown(self) -> str:
        """The command as a person would type it (binary and model by file name)."""
        a = self.argv()
        a[0], a[2] = Path(a[0]).name, Path(a[2]).name
        return " ".join(a)


def check_flags(cfg: BenchConfig, help_info: dict | None) -> None:
    """Refuse a flag the built llama-bench does not know (e.g. ``-mmp``, gone in current llama.cpp)."""
    if not help_info or not help_info.get("flags"):
        return
    used = [a for a in cfg.argv()[1:] if a.startswith("-") and not re.match(r"^-\d", a)]
    unknown = [f for f in used if f not in help_info["flags"]]
    if unknown:
        raise ValueError(f"llama-bench ({cfg.bench}) does not accept {', '.join(unknown)}; "
                         "check `llama-bench --help` (e.g. -mmp became -lm/--load-mode)")

# ---- machine load ---------------------------------------------------------------------------
def snapshot(load: dict) -> dict:
    """The benchmark's view of :data:`aios_lib.facts.load.FACT`: busy CPU time **without** steal
    (steal is kept apart: a hypervisor taking the CPU is not another process), idle with iowait,
    the ``cpuN`` count and the load average. The idle-CPU check computes its own figure from the
    same fields (:func:`aios_lib.service.hardening.idle_cpu`)."""
    out: dict[str, Any] = {}
    t = load.get("cpu")
    if t is not None:
        out.update(busy=t.busy_excl_steal, idle=t.idle_all, steal=t.steal, total=t.total)
        if t.ncpu:
            out["ncpu"] = t.ncpu
    out.update(load.get("loadavg") or {})
    return out


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def load_snapshot(runner) -> dict:
    """/proc/stat + /proc/loadavg read through the runner (a probe: runs in plan mode too)."""
    snap = snapshot(gather(runner, load_facts.FACT))
    snap.update(time=time.time(), children_cpu=_children_cpu())
    return snap


def load_during(before: dict, after: dict, hz: int | None = None) -> dict:
    """What other processes used while the benchmark ran, in cores (1.0 = one busy core)."""
    hz = hz or os.sysconf("SC_CLK_TCK")
    wall = max(after["time"] - before["time"], 1e-6)
    busy = (after.get("busy", 0) - before.get("busy", 0)) / hz
    own = after["children_cpu"] - before["children_cpu"]
    steal = (after.get("steal", 0) - before.get("steal", 0)) / hz
    others = max(busy - own, 0.0) / wall
    return {"wall_s": round(wall, 2), "own_cores": round(own / wall, 3), "others_cores": round(others, 3),
            "steal_cores": round(steal / wall, 3), "loadavg_before": before.get("loadavg"),
            "loadavg_after": after.get("loadavg"),
            "contended": bool(others > CONTENDED_CORES or steal / wall > CONTENDED_CORES)}

# ---- running --------------------------------------------------------------------------------
def run_config(run, cfg: BenchConfig, round_no: int = 0, help_info: dict | None = None,
               timeout: float = 3600) -> dict:
    """One llama-bench invocation; returns its record (rows with samples, load, command)."""
    check_flags(cfg, help_info)
    before = load_snapshot(run.runner)
    res = run.runner.work(cfg.argv(), note=f"bench {cfg.label} round {round_no + 1}", timeout=timeout, quiet=True)
    rec = {"label": cfg.label, "round": round_no, "command": res.cmdline, "shown": cfg.shown(),
           "planned": res.planned, "started": res.started, "seconds": round(res.duration, 2), "rows": [],
           "load": None}
    if res.planned:
        return rec
    after = load_snapshot(run.runner)
    rec["load"] = load_during(before, after)
    rec["rows"] = parse_bench_json(res.stdout)
    return rec


def config_dict(cfg: BenchConfig) -> dict:
    d = asdict(cfg)
    d["argv"] = cfg.argv()
    d["shown"] = cfg.shown()
    return d
