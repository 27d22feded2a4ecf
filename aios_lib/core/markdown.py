"""Markdown tables for results that display themselves in notebooks (no tabulate dependency).
"""
from __future__ import annotations

import math


def md_table(df) -> str:
    """A DataFrame as a Markdown table (no tabulate dependency)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        return str(v).replace("|", "\\|")

    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)
