"""outputs/index.html: every run with the machine it ran on and what it found, linking its HTML.

One row per run folder (``outputs/<machine>/<run-id>/run.json``): the machine's CPU, cores, memory
and kernel (from the run's phase 01 survey, when it has one), the parameter file, the Synapse
commit, the duration, the outcome with a link per phase, and the headline figure (phase 05's
"Synapse vs stock" verdict, or an older record's comparison). A static page: a few lines of
JavaScript sort it by any column. Everything comes from the records, never the live system.
"""
from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

from .core.paths import outputs_dir
from .core.records import folder_in_use, read_json

GIB = 1024**3


def list_runs(root: Path | None = None) -> list[dict]:
    root = root or outputs_dir()
    runs = []
    for meta_file in sorted(root.glob("*/*/run.json")):
        meta = read_json(meta_file)
        meta["_dir"] = meta_file.parent
        runs.append(meta)
    runs.sort(key=lambda m: m.get("started", ""), reverse=True)
    return runs


def _mode(meta: dict) -> str:
    """plan or run; an interactive session (``aios lab``) says so, and which phases it ran for real."""
    if not meta.get("session"):
        return "plan" if meta.get("plan") else "run"
    phases = meta.get("phases", [])
    ran = [p["phase"] for p in phases if p.get("plan") is False and p.get("status") != "not run"]
    if not ran:
        return f"{meta['session']} · plan"
    planned = [p["phase"] for p in phases if p.get("plan") is not False and p.get("status") != "not run"]
    return f"{meta['session']} · run {' '.join(ran)}" + (f" · plan {' '.join(planned)}" if planned else "")


# ---- what one row shows -----------------------------------------------------------------------
def _duration_s(meta: dict) -> float | None:
    try:
        if meta.get("resumes"):  # the pause before a resume is not the run's time: its phases' is
            raise KeyError("resumed")
        return (datetime.fromisoformat(meta["finished"]) - datetime.fromisoformat(meta["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        secs = [p.get("seconds") for p in meta.get("phases", []) if isinstance(p.get("seconds"), (int, float))]
        return float(sum(secs)) if secs else None


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s")


def _params_file(meta: dict) -> str:
    f = str(meta.get("params_file") or "")
    i = f.rfind("/parameters/")
    return f[i + 1:] if i >= 0 else (Path(f).name or "—")


def headline(results: dict) -> str:
    """The run's headline figure: phase 05's "Synapse vs stock" verdict (the first finding that is
    one, else the first finding), or for a record made before the proof existed its comparison's
    token generation line, or for a tune run (phase 08 alone) its first finding (the configuration
    it chose); "" when the run measured nothing."""
    b = results.get("05") or {}
    findings = b.get("findings") or (b.get("proof") or {}).get("findings") or []
    if findings:
        return next((f for f in findings if f.startswith("Synapse vs")), findings[0])
    tuned = (results.get("08") or {}).get("findings") or []  # an `aios tune` run: what it chose
    if tuned:
        return tuned[0]
    old = b.get("three_way")
    if not old:
        return ""
    try:
        from .benchmark.compare import summary_lines
        from .measure.experiment import Experiment

        ex = Experiment.from_dict(old)
        lines = [ln.strip() for ln in summary_lines(ex) if " vs " in ln]
        tg = [ln for ln in lines if " tg" in ln]
        return " ".join((tg or lines or [""])[-1].split())
    except Exception:  # a record this version cannot read: no headline rather than no index
        return ""


def machine_facts(results: dict) -> dict[str, Any]:
    """CPU, cores, memory and kernel from the run's phase 01 survey (empty when it has none)."""
    s = (results.get("01") or {}).get("survey") or {}
    c, m, k = s.get("cpu") or {}, s.get("memory") or {}, s.get("kernel") or {}
    if not s:
        return {}
    check = c.get("generation_check")
    if check is None and c.get("flags"):  # a survey recorded before the cross-check: redo it from its flags
        from .facts.cpu import generation_check

        check = generation_check(c.get("vendor"), c.get("generation"), c.get("flags"), model_hex=c.get("model_hex"),
                                 virtual=bool(c.get("hypervisor_vendor") or "hypervisor" in c.get("flags")))
    gen = c.get("generation")
    if check and not check.get("agrees", True) and check.get("flags_floor"):
        gen = f"{check['flags_floor']} or newer by its flags (CPUID says {check.get('reported')})"
    return {"cpu": " · ".join(x for x in (c.get("model_name"), gen) if x),
            "physical_cores": c.get("physical_cores"), "logical_cpus": c.get("logical_cpus"),
            "memory_bytes": m.get("total_bytes"), "kernel": k.get("release")}


def _commit(meta: dict, run_dir: Path) -> tuple[str, str]:
    """(short commit, how it is known): run.json's own, else the commit that added the record."""
    own = meta.get("commit") or (meta.get("synapse") or {}).get("commit")
    if own:
        return str(own)[:10], "the Synapse commit the run was made with"
    from .core.journal import Journal
    from .core.paths import project_root
    from .core.runner import Runner

    try:
        r = Runner(journal=Journal(None)).probe(
            ["git", "-C", str(project_root()), "log", "-1", "--format=%h", "--diff-filter=A", "--",
             str(run_dir / "run.json")], check=False, quiet=True)
        added = (r.stdout or "").strip() if r.rc == 0 else ""
    except Exception:
        added = ""
    return (added, "the commit that added this record (run.json names none)") if added else \
        ("—", "not committed, and run.json names no commit")


def row(meta: dict, root: Path) -> dict[str, Any]:
    """One run as the index shows it (plain values; :func:`write_index` renders them)."""
    d: Path = meta["_dir"]
    results = read_json(d / "results.json") if (d / "results.json").exists() else {}
    hw = machine_facts(results)
    commit, commit_how = _commit(meta, d)
    outcome = meta.get("outcome") or ("ok" if meta.get("ok") else "failed" if "finished" in meta else
                                      "running" if folder_in_use(d) else "interrupted")  # killed: --resume continues it
    if meta.get("session") and "finished" not in meta:
        outcome += " (session open)"
    return {"machine": meta.get("machine", "?"), "started": meta.get("started", "?"),
            "mode": _mode(meta), "session": bool(meta.get("session")), **{k: hw.get(k) for k in (
                "cpu", "physical_cores", "logical_cpus", "memory_bytes", "kernel")},
            "params_file": _params_file(meta), "commit": commit, "commit_how": commit_how,
            "duration_s": _duration_s(meta), "outcome": outcome, "phases": meta.get("phases", []),
            "headline": headline(results), "dir": d.relative_to(root), "run_id": meta.get("run_id", "")}


# ---- the page -------------------------------------------------------------------------------------
COLUMNS = ["machine", "started", "mode", "CPU", "cores", "memory", "kernel", "parameters", "commit", "duration",
           "outcome", "headline", "folder"]

SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const dir = th.dataset.dir === 'asc' ? -1 : 1;
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = td => td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  const num = s => /^-?[0-9]+([.][0-9]+)?$/.test(s) ? parseFloat(s) : NaN;  // dates and names sort as text
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a.cells[i]), y = key(b.cells[i]);
    const nx = num(x), ny = num(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return dir * c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""


def _td(text: str, sort: Any = None, title: str = "", raw: bool = False) -> str:
    attrs = (f' data-sort="{html.escape(str(sort))}"' if sort is not None else "") + \
            (f' title="{html.escape(title)}"' if title else "")
    return f"<td{attrs}>{text if raw else html.escape(text)}</td>"


def render_row(r: dict) -> str:
    cells = []
    for p in r["phases"]:
        link = Path(p["html"]).name if p.get("html") else None
        label = html.escape(f"{p['phase']} {p['status']}" + (" (plan)" if r["session"] and p.get("plan") is not False else ""))
        color = {"ok": "#1a7f37", "failed": "#cf222e"}.get(p["status"], "#9a6700")
        text = f'<a href="{html.escape(str(r["dir"] / link))}">{label}</a>' if link else label
        cells.append(f'<span style="color:{color}" title="{html.escape(p.get("error") or "")}">{text}</span>')
    phys, logical = r["physical_cores"], r["logical_cpus"]
    cores = f"{phys} / {logical}" if phys or logical else "—"
    mem = r["memory_bytes"]
    outcome = r["outcome"]
    return "<tr>" + "".join([
        _td(r["machine"]), _td(r["started"]), _td(r["mode"]), _td(r["cpu"] or "—"),
        _td(cores, sort=logical if logical is not None else -1, title="physical cores / logical CPUs"),
        _td(f"{mem / GIB:.1f} GiB" if mem else "—", sort=mem or -1), _td(r["kernel"] or "—"),
        _td(r["params_file"]), _td(r["commit"], title=r["commit_how"]),
        _td(_fmt_duration(r["duration_s"]), sort=r["duration_s"] if r["duration_s"] is not None else -1),
        _td(f"<b>{html.escape(outcome)}</b><br>" + " · ".join(cells), sort=outcome, raw=True),
        _td(r["headline"] or "—"),
        _td(f'<a href="{html.escape(str(r["dir"]))}/">{html.escape(r["run_id"])}</a>', sort=r["run_id"], raw=True),
    ]) + "</tr>"


def write_index(root: Path | None = None) -> Path:
    root = root or outputs_dir()
    root.mkdir(parents=True, exist_ok=True)
    rows = [render_row(row(meta, root)) for meta in list_runs(root)]
    page = (
        "<!doctype html><meta charset='utf-8'><title>Synapse runs</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
        "vertical-align:top;text-align:left}th{cursor:pointer;white-space:nowrap}th[data-dir=asc]::after{content:' ▲'}"
        "th[data-dir=desc]::after{content:' ▼'}td:nth-child(12){max-width:40em}</style>"
        "<h1>Synapse runs</h1><p>One row per record under outputs/. Machine facts come from the run's phase 01 "
        "survey; the headline is phase 05's verdict. Click a column to sort.</p>"
        "<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr></thead><tbody>\n"
        + "\n".join(rows) + "\n</tbody></table><script>" + SORT_JS + "</script>\n"
    )
    out = root / "index.html"
    out.write_text(page)
    return out
