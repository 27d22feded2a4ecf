"""Files: what the usual tools print about them, and a file's text read through the runner (a
probe: journaled, runs in plan mode too).

``cat`` for plain files; any command that prints a file's content (``zcat``, ``xz -dc``) reads the
same way. Not ``required``: None when it cannot be read (missing, no permission); ``required``: a
failed read raises :class:`aios_lib.core.runner.CommandFailed`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

from .base import Fact


def parse_sha256sum(text: str | None) -> str | None:
    """Pure: the digest of the first line of ``sha256sum FILE`` output (None when there is none)."""
    m = re.match(r"^([0-9a-f]{64})\s", text or "")
    return m.group(1) if m else None


def parse_text(o: Mapping[str, str]) -> str | None:
    """The printed text when the command succeeded, else None (an empty file is "", not None)."""
    return (o.get("text") or "") if o.get("text.rc") == 0 else None


def read(argv: Sequence[str | Path], name: str | None = None, required: bool = False) -> Fact:
    """The text ``argv`` prints (a file's content)."""
    argv = tuple(str(a) for a in argv)
    if required:
        return Fact(name=name or argv[-1], commands={"text": argv}, parse=lambda o: o.get("text") or "")
    return Fact(name=name or argv[-1], commands={"text": argv}, parse=parse_text, status=frozenset({"text"}))


def text(path: str | Path, required: bool = False) -> Fact:
    """The content of the file ``path`` (``cat``)."""
    return read(("cat", str(path)), name=str(path), required=required)
