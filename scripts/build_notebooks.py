#!/usr/bin/env python3
"""Build notebooks/NN_*.ipynb from their sources notebooks/src/NN_*.py (percent format).

Why a source file: notebooks are JSON, which diffs and reviews badly. The .py source is what
developers edit; the .ipynb is what users open in JupyterLab and what papermill executes.
Both are committed; tests/test_notebooks.py fails when they disagree.

Format: a line ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell (each line
prefixed with ``# ``), ``# %% tags=["parameters"]`` a code cell with tags.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
_HEADER = re.compile(r"^# %%(?:\s+\[(?P<kind>markdown)\])?(?:\s+tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Synapse (.venv)", "language": "python", "name": "synapse"},
        "language_info": {"name": "python"},
    }
    cells: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append((m.group("kind") or "code", json.loads(m.group("tags")) if m.group("tags") else [], []))
        elif cells:
            cells[-1][2].append(line)
    for kind, tags, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines)
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        if tags:
            cell.metadata["tags"] = tags
        cell.pop("id", None)
        cells_out = nb.cells
        cells_out.append(cell)
    # stable ids so rebuilding gives identical files
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def render(src: Path) -> str:
    return nbformat.writes(parse(src.read_text()), version=4) + "\n"


def main(check: bool = False) -> int:
    stale = []
    for src in sorted(SRC.glob("*.py")):
        out = OUT / (src.stem + ".ipynb")
        text = render(src)
        if check:
            if not out.exists() or out.read_text() != text:
                stale.append(out.name)
        else:
            out.write_text(text)
            print(f"wrote {out.relative_to(ROOT)}")
    if stale:
        print("out of date (run scripts/build_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
