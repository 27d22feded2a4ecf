"""The fleet report (notebook 09): one row per host, outliers flagged, plots. Reads records only.

A row comes from the fleet record (``outputs/fleet/<id>/fleet.json``: how the host's run ended)
and the host's own run folder (``outputs/<host>/<run-id>/results.json``): hardware from phase
01's survey, the configuration phase 05 chose, its stock-vs-Synapse verdict and the served
generation rate (mean over the served rounds, with a 95% CI).

An **outlier** is a host whose served rate lies more than its own CI away from its group, the
hosts on the same hardware (same CPU model and core count), itself included: the group's median
is outside the host's CI. A host alone on its hardware cannot be an outlier.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..core.paths import outputs_dir
from ..core.records import read_json
from ..measure import stats


def latest_fleet(base: Path | None = None, plan: bool | None = None) -> Path | None:
    """The newest fleet record (``outputs/fleet/<id>/fleet.json``), optionally run or plan only."""
    root = (base or outputs_dir()) / "fleet"
    found = sorted(p.parent for p in root.glob("*/fleet.json")) if root.is_dir() else []
    if plan is not None:
        found = [p for p in found if bool(read_json(p / "fleet.json").get("plan")) == plan]
    return found[-1] if found else None


def served_rate(results: dict) -> dict | None:
    """Synapse's served generation t/s from phase 05 (one value per round): mean and 95% CI."""
    served = ((results.get("05") or {}).get("proof") or {}).get("served") or {}
    b = served.get("b")
    vals = [s.get("gen_tps") for s in served.get("sessions") or [] if s.get("label") == b and s.get("gen_tps")]
    if not vals:
        return None
    s = stats.summarize(vals)
    return {"mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}


def host_row(h: dict) -> dict:
    """One host's row from its fleet outcome and its fetched record."""
    rec = Path(h["record"]) if h.get("record") else None
    results = read_json(rec / "results.json") if rec else {}
    summ = (results.get("01") or {}).get("summary") or {}
    chosen = (results.get("05") or {}).get("chosen") or {}
    findings = (results.get("05") or {}).get("findings") or []
    verdict = next((f for f in findings if f.startswith("Synapse vs")), findings[0] if findings else None)
    served = served_rate(results)
    flags = " ".join(f"{k} {v}" if v is not None else k for k, v in (chosen.get("flags") or {}).items())
    return {
        "host": h["name"], "address": h.get("address"), "outcome": h.get("status"),
        "error": h.get("error"),
        "cpu": " · ".join(x for x in (summ.get("model_name"), summ.get("generation")) if x) or None,
        "cores": summ.get("physical_cores"),
        "ram_gib": round(summ["mem_total_bytes"] / 2**30, 1) if summ.get("mem_total_bytes") else None,
        "configuration": (f"-t {chosen['threads']} {flags}".strip() if chosen.get("threads") else None),
        "verdict": verdict,
        "served_tps": served["mean"] if served else None,
        "served_ci_low": served["ci_low"] if served else None,
        "served_ci_high": served["ci_high"] if served else None,
        "phases": ", ".join(f"{p.get('phase')} {p.get('status')}" for p in h.get("phases") or []) or None,
        "record": h.get("record"),
    }


def flag_outliers(rows: list[dict], value: str = "served_tps", low: str = "served_ci_low",
                  high: str = "served_ci_high", group: tuple[str, ...] = ("cpu", "cores")) -> list[dict]:
    """Each row gets ``outlier`` (True/False, None when it cannot be judged) and ``outlier_why``.
    Pure."""
    out = []
    for r in rows:
        r = dict(r)
        peers = [p for p in rows if p is not r and p["host"] != r["host"] and all(p.get(g) == r.get(g) for g in group)
                 and _num(p.get(value))]
        v, lo, hi = r.get(value), r.get(low), r.get(high)
        if not _num(v) or not _num(lo) or not _num(hi):
            r["outlier"], r["outlier_why"] = None, "no served rate with a CI"
        elif not peers:
            r["outlier"], r["outlier_why"] = None, "no other host on the same hardware"
        else:
            # the median of the whole group, this host included: with two normal hosts and one slow
            # one, only the slow one is flagged (the median of the others alone would be pulled
            # halfway by the slow one and flag the normal hosts too)
            vals = sorted([v, *(p[value] for p in peers)])
            med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
            r["outlier"] = not (lo <= med <= hi)
            r["outlier_why"] = (f"the group's median {med:.1f} t/s lies {'below' if med < lo else 'above'} this host's "
                                f"CI [{lo:.1f}, {hi:.1f}]" if r["outlier"] else
                                f"the group's median {med:.1f} t/s lies inside this host's CI [{lo:.1f}, {hi:.1f}]")
        out.append(r)
    return out


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fleet_table(fleet: dict):
    """The fleet as a table: one row per host, outliers flagged."""
    import pandas as pd

    rows = flag_outliers([host_row(h) for h in fleet.get("hosts") or []])
    cols = ["host", "outcome", "cpu", "cores", "ram_gib", "configuration", "verdict", "served_tps",
            "served_ci_low", "served_ci_high", "outlier", "outlier_why", "phases", "error"]
    return pd.DataFrame(rows, columns=cols)


def served_plot(table):
    """Served generation t/s per host with its CI; outliers in red. None when nothing was served."""
    import matplotlib.pyplot as plt

    t = table[table["served_tps"].notna()] if table is not None and len(table) else None
    if t is None or not len(t):
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(t)), 3))
    err = [t["served_tps"] - t["served_ci_low"], t["served_ci_high"] - t["served_tps"]]
    colors = ["tab:red" if o is True else "tab:blue" for o in t["outlier"]]
    ax.bar(t["host"], t["served_tps"], yerr=err, color=colors, capsize=4)
    ax.set_ylabel("served generation (t/s)")
    ax.set_title("Synapse served rate per host (95% CI; red: outlier)")
    fig.tight_layout()
    plt.close(fig)
    return fig


def outcome_plot(fleet: dict):
    """Seconds each host spent per playbook step (a failed step in red)."""
    import matplotlib.pyplot as plt

    hosts = fleet.get("hosts") or []
    if not any(h.get("steps") for h in hosts):
        return None
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(hosts) + 1.2))
    for i, h in enumerate(hosts):
        left = 0.0
        for s in h.get("steps") or []:
            d = _seconds(s.get("delta"))
            color = "tab:red" if s.get("status") in ("failed", "unreachable") else "tab:green"
            ax.barh(i, max(d, 0.2), left=left, color=color, edgecolor="white")
            left += max(d, 0.2)
        ax.text(left + 0.3, i, h.get("status"), va="center")
    ax.set_yticks(range(len(hosts)), [h["name"] for h in hosts])
    ax.set_xlabel("seconds per step (green ok, red failed; commands only, copies take ~0)")
    ax.set_title("the playbook on each host")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _seconds(delta) -> float:
    """Ansible's ``delta`` (H:MM:SS.ffffff) in seconds; 0 when absent."""
    if not delta:
        return 0.0
    try:
        h, m, s = str(delta).split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return 0.0


def layout_for_fleet(fleet: dict, model_bytes: int):
    """Replicas or RPC for ``model_bytes`` from each host's memory (its parameters' service.ram_gib,
    else its survey) less its service.memory_reserve_gib."""
    from .rpc import choose_layout

    memory, reserve = {}, {}
    for h in fleet.get("hosts") or []:
        row = host_row(h)
        p = _host_params(fleet, h["name"])
        svc = p.get("service") or {}
        ram = svc.get("ram_gib")
        if isinstance(ram, (int, float)):
            memory[h["name"]] = int(ram * 2**30)
        elif row.get("ram_gib"):
            memory[h["name"]] = int(row["ram_gib"] * 2**30)
        reserve[h["name"]] = int(float(svc.get("memory_reserve_gib", 4.0)) * 2**30)
    if not memory:
        return None
    return choose_layout(model_bytes, memory, {h: reserve[h] for h in memory})


def _host_params(fleet: dict, name: str) -> dict:
    import yaml

    d = fleet.get("_dir")
    p = Path(d) / "params" / f"{name}.yaml" if d else None
    return (yaml.safe_load(p.read_text()) or {}) if p and p.exists() else {}


def load(d: str | Path | None) -> dict:
    """A fleet record (with its folder under ``_dir``), or {} when there is none."""
    if not d:
        return {}
    f = read_json(Path(d) / "fleet.json")
    if f:
        f["_dir"] = str(d)
    return f


def latest_measurement(key: str, base: Path | None = None) -> tuple[Path, dict] | None:
    """The newest run record under outputs/ whose results.json has ``fleet/<key>`` (the scaling
    benchmark and the RPC comparison record there)."""
    root = base or outputs_dir()
    hits = []
    for f in root.glob("*/*/results.json"):
        r = read_json(f)
        if (r.get("fleet") or {}).get(key):
            hits.append((f.stat().st_mtime, f.parent, r["fleet"][key]))
    if not hits:
        return None
    hits.sort(key=lambda t: t[0])
    return hits[-1][1], hits[-1][2]


def host_results(fleet: dict) -> list[dict]:
    """Each host's fetched results.json ({} for a host without a record)."""
    return [read_json(Path(h["record"]) / "results.json") if h.get("record") else {} for h in fleet.get("hosts") or []]


# ---- the scaling and RPC measurements (recorded by bench/fleet_scaling.py) --------------------------
def _ci(d: dict | None, fmt: str = "{:.2f}") -> str:
    if not d or not _num(d.get("ratio")):
        return "n/a"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{fmt.format(lo)}, {fmt.format(hi)}]" if _num(lo) and _num(hi) else " (one round: no CI)"
    return fmt.format(d["ratio"]) + "x" + ci


def scaling_table(rec: dict):
    import pandas as pd

    rows = []
    for r in rec.get("rounds") or []:
        for n, p in sorted((r.get("points") or {}).items(), key=lambda kv: int(kv[0])):
            rows.append({"round": r["round"], "replicas": int(n), "aggregate t/s": p.get("aggregate_tps"),
                         "TTFT p50 (ms)": p.get("ttft_p50_ms"), "TTFT p99 (ms)": p.get("ttft_p99_ms"),
                         "ok": p.get("ok"), "failed": p.get("failed"), "requests": p.get("requests")})
    return pd.DataFrame(rows, columns=["round", "replicas", "aggregate t/s", "TTFT p50 (ms)", "TTFT p99 (ms)",
                                       "ok", "failed", "requests"])


def scaling_lines(rec: dict) -> list[str]:
    """Sentences generated from a scaling record."""
    out = []
    cond = rec.get("conditions") or {}
    if cond:
        out.append("conditions: " + ", ".join(f"{k} {v}" for k, v in cond.items()))
    r = rec.get("ratio")
    if r:
        out.append(f"2 replicas vs 1, aggregate generation: {_ci(r)} over {r.get('rounds')} interleaved rounds (paired)")
    e = rec.get("efficiency")
    if e and _num(e.get("ratio")):
        out.append(f"scaling efficiency (aggregate at 2 / (2 x one replica)): {_ci(e)}")
    t = rec.get("ttft_ratio")
    if t:
        out.append(f"TTFT p50, 2 replicas vs 1 (same offered load per replica): {_ci(t)}")
    k = rec.get("kill")
    if k:
        out += kill_lines(k)
    return out


def kill_lines(k: dict) -> list[str]:
    c = k.get("counts") or {}
    down = k.get("marked_down_after_s")
    return [f"replica {k.get('victim')} killed mid-load: {c.get('sent')} sent = {c.get('ok')} ok + {c.get('failed')} "
            f"failed ({c.get('not sent', 0)} not sent); {len(k.get('in_flight_on_victim') or [])} were in flight on it; "
            f"HAProxy retries {k.get('retries')}, redispatches {k.get('redispatches')}",
            f"HAProxy marked it DOWN {down:.2f} s after the kill (checks every {k.get('check_budget_s', 0) - 2:.1f}/2 s x2) "
            f"and sent it {k.get('sessions_to_victim_after_down')} request(s) after that"
            if _num(down) else "HAProxy did not mark the killed replica DOWN within 30 s"]


def rpc_lines(rec: dict) -> list[str]:
    out = []
    cond = rec.get("conditions") or {}
    if cond:
        out.append("conditions: " + ", ".join(f"{k} {v}" for k, v in cond.items()))
    lay = rec.get("layout") or {}
    if lay:
        out.append(f"layout chosen: {lay.get('mode')}: {lay.get('why')}")
    g = rec.get("greedy") or {}
    if g:
        out.append("greedy output (temperature 0, seed 0): " + (
            "the split model says exactly what one host says" if g.get("same") else
            f"differs from one host at character {g.get('first_difference')}: {g.get('why', '')}"))
    for key, what in (("gen_ratio", "generation"), ("prompt_ratio", "prompt processing")):
        r = rec.get(key)
        if r:
            out.append(f"{what}, split over RPC vs one host: {_ci(r)} over {r.get('rounds')} rounds")
    return out


def findings(fleet: dict, scaling: dict | None, rpc: dict | None) -> list[str]:
    """The report's findings, every number from the records."""
    out = []
    if fleet:
        hs = fleet.get("hosts") or []
        ok = [h["name"] for h in hs if h.get("status") == "ok"]
        bad = [f"{h['name']} ({h.get('status')}: {h.get('failed_step') or h.get('error')})" for h in hs
               if h.get("status") not in ("ok", "planned")]
        out.append(f"{len(hs)} host(s) in the fleet record, {len(ok)} ok" + (f"; not ok: {', '.join(bad)}" if bad else ""))
        flagged = [r for r in flag_outliers([host_row(h) for h in hs]) if r.get("outlier")]
        if flagged:
            out.append("outliers: " + "; ".join(f"{r['host']}: {r['outlier_why']}" for r in flagged))
    if scaling:
        out += [ln for ln in scaling_lines(scaling) if not ln.startswith("conditions")][:3]
    if rpc:
        out += [ln for ln in rpc_lines(rpc) if not ln.startswith("conditions")]
    return out
