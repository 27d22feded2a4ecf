"""outputs/index.html: every run by machine, date, phase and outcome, linking its HTML."""
from __future__ import annotations

import html
from pathlib import Path

from .core.paths import outputs_dir
from .core.records import read_json


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


def write_index(root: Path | None = None) -> Path:
    root = root or outputs_dir()
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for meta in list_runs(root):
        d: Path = meta["_dir"]
        rel = d.relative_to(root)
        cells = []
        for p in meta.get("phases", []):
            link = Path(p["html"]).name if p.get("html") else None
            label = html.escape(f"{p['phase']} {p['status']}" + (" (plan)" if meta.get("session") and
                                                                   p.get("plan") is not False else ""))
            color = {"ok": "#1a7f37", "failed": "#cf222e"}.get(p["status"], "#9a6700")
            text = f'<a href="{html.escape(str(rel / link))}">{label}</a>' if link else label
            title = html.escape(p.get("error") or "")
            cells.append(f'<span style="color:{color}" title="{title}">{text}</span>')
        outcome = meta.get("outcome") or ("ok" if meta.get("ok") else
                                          ("running" if "finished" not in meta else "failed"))
        if meta.get("session") and "finished" not in meta:
            outcome += " (session open)"
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in [
                html.escape(meta.get("machine", "?")), html.escape(meta.get("started", "?")),
                _mode(meta), " · ".join(cells), html.escape(outcome),
                f'<a href="{html.escape(str(rel))}/">{html.escape(meta.get("run_id", ""))}</a>',
            ]) + "</tr>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>Synapse runs</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style>"
        "<h1>Synapse runs</h1><table><tr><th>machine</th><th>started</th><th>mode</th><th>phases</th>"
        "<th>outcome</th><th>folder</th></tr>" + "\n".join(rows) + "</table>"
    )
    out = root / "index.html"
    out.write_text(page)
    return out
