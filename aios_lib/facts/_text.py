"""Small pure helpers shared by the parse functions (no I/O here)."""
from __future__ import annotations

import json
import re
from typing import Iterable

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}


def parse_size(text: str | None) -> int | None:
    """'48K', '2048K', '96 KiB', '11.5 MiB', '32536456 kB' -> bytes (binary units, as the kernel means them)."""
    if not text:
        return None
    m = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)\b", text.strip(), re.I)
    if not m:
        return None
    unit = m.group(2).upper()
    if unit not in _UNITS:
        return None
    return int(round(float(m.group(1)) * _UNITS[unit]))


def parse_cpulist(text: str | None) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]; '' -> []."""
    cpus: list[int] = []
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.extend(range(int(a), int(b) + 1))
        else:
            cpus.append(int(part))
    return cpus


def format_cpulist(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    cpus = sorted(set(cpus))
    out: list[str] = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def grep_lines(text: str | None) -> dict[str, str]:
    """Output of ``grep -r . DIR`` (``path:value`` lines) -> {path: value}.

    A file with several lines keeps them joined by newlines.
    """
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" not in line:
            continue
        path, value = line.split(":", 1)
        out[path] = (out[path] + "\n" + value) if path in out else value
    return out


def gib(n_bytes: float | None, digits: int = 1) -> float | None:
    return None if n_bytes is None else round(n_bytes / 1024**3, digits)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---- lscpu -------------------------------------------------------------------------------

#: lscpu's tree view (util-linux >= 2.38 on a terminal) groups fields under section headers and
#: shortens their names; map them back to the flat names so one parser handles both layouts.
_SECTION_PREFIX = {"Vulnerabilities": "Vulnerability "}
_CACHE_SHORT = {"L1d", "L1i", "L2", "L3", "L4"}


def parse_lscpu(text: str | None) -> dict[str, str]:
    """``lscpu`` (flat or tree text) or ``lscpu -J`` -> {field name without colon: value}."""
    text = text or ""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            out: dict[str, str] = {}
            _walk_json(data.get("lscpu", []), out, section="")
            return out
    out = {}
    section = ""
    last_key: str | None = None
    # key -> (column where its value starts, [raw physical lines]) for values that wrap
    wrapped: dict[str, tuple[int, list[str]]] = {}
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = re.match(r"^(\s*)([^:]+?):(\s*)(.*)$", raw)
        if not m or len(m.group(2)) > 60:
            # a wrapped continuation of the previous value (long Flags lines wrap on a terminal)
            if last_key is not None:
                wrapped[last_key][1].append(raw)
            continue
        indent, key, gap, value = m.groups()
        key = key.strip()
        value = value.strip()
        if not indent:
            section = ""
        if value == "":  # a section header of the tree view ("Caches (sum of all):", "NUMA:" ...)
            section = key
            last_key = None
            continue
        key = _flat_name(key, section)
        out[key] = value
        last_key = key
        wrapped[key] = (len(indent) + len(m.group(2)) + 1 + len(gap), [raw])
    for key, (col, lines) in wrapped.items():
        if len(lines) > 1:
            out[key] = _join_wrapped(col, lines)
    return out


def _join_wrapped(col: int, lines: list[str]) -> str:
    """Join a value that lscpu wrapped over several lines.

    On a terminal lscpu either wraps at word boundaries (lines of varying length) or chops at the
    exact column width, even inside a word (every line but the last has the same length). A chop is
    joined without adding anything; a word wrap with a space.
    """
    lengths = {len(x) for x in lines[:-1]}
    if len(lines) >= 3 and len(lengths) == 1:
        return "".join(x[col:] for x in lines).strip()
    return " ".join(x.strip() if i else x[col:].strip() for i, x in enumerate(lines)).strip()


def _flat_name(key: str, section: str) -> str:
    if section.startswith("Caches") and key in _CACHE_SHORT:
        return f"{key} cache"
    prefix = _SECTION_PREFIX.get(section)
    if prefix and not key.startswith(prefix):
        return prefix + key
    return key


def _walk_json(items, out: dict[str, str], section: str) -> None:
    for item in items or []:
        key = str(item.get("field", "")).strip().rstrip(":").strip()
        value = item.get("data")
        value = "" if value is None else str(value).strip()
        children = item.get("children")
        if key:
            if value == "" and children:
                _walk_json(children, out, key)
                continue
            out[_flat_name(key, section)] = value
        if children:
            _walk_json(children, out, section)


def parse_lscpu_p(text: str | None) -> list[dict[str, int | None]]:
    """``lscpu -p=CPU,CORE,SOCKET,NODE`` -> one row per logical CPU, keyed by lower-case column name.

    The column names come from the last ``# CPU,Core,...`` comment line, so any column list works.
    """
    cols: list[str] = []
    rows: list[dict[str, int | None]] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line.lstrip("#").strip()
            if body.upper().startswith("CPU,") or body.upper() == "CPU":
                cols = [c.strip().lower() for c in body.split(",")]
                rows = []  # a second table (e.g. --physical) replaces the first
            continue
        if not cols:
            continue
        vals = line.split(",")
        row: dict[str, int | None] = {}
        for name, val in zip(cols, vals):
            if not name:
                continue
            val = val.strip()
            row[name] = int(val) if val.lstrip("-").isdigit() else None
        rows.append(row)
    return rows


def parse_cpuinfo(text: str | None) -> list[dict[str, str]]:
    """/proc/cpuinfo -> one dict per processor block."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            cur[k.strip()] = v.strip()
    if cur:
        blocks.append(cur)
    return [b for b in blocks if "processor" in b]
