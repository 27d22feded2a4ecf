"""Small pure helpers shared by the file-based settings: read a key=value / ini file."""
from __future__ import annotations

from pathlib import Path

from ..facts import files, gather


def parse_kv(text: str | None, section: str | None = None) -> dict[str, str]:
    """Pure: ``key = value`` lines (``#``/``;`` comments); only inside ``[section]`` when given."""
    out: dict[str, str] = {}
    if not text:
        return out
    current = None
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln or ln[0] in "#;":
            continue
        if ln.startswith("[") and ln.endswith("]"):
            current = ln[1:-1].strip()
            continue
        if "=" not in ln or (section is not None and current != section):
            continue
        k, v = ln.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def host_path(root: Path | None, path: str) -> Path:
    return (Path(root) / path.lstrip("/")) if root else Path(path)


def read_text(runner, root: Path | None, path: str) -> str | None:
    """The file's text (None when it cannot be read), through the :func:`aios_lib.facts.files.text` fact."""
    return gather(runner, files.text(host_path(root, path)))
