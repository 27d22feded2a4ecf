"""The build cache: ``~/.cache/synapse/<kind>/<key>``, keyed by a digest of everything that decides
the content, written whole or not at all.

Every heavy artefact (llama.cpp builds and sources, models, kernels, disk images, small compiled
probes) uses the same four things:

* :func:`key`: a digest of the inputs (canonical JSON), and :func:`code_hash` for the project's own
  files that decide an artefact (a missing file is an error, never silently skipped);
* :func:`lock`: an exclusive lock next to the entry, so two sessions never build one key at once
  (no-op in plan mode, where nothing is written);
* a completion marker (:meth:`Entry.mark_complete`) written last: an entry without it is a
  half-written leftover of an interrupted run and is never used;
* :func:`keep_newest`: old entries of a kind are removed, newest kept, locked ones never.

:func:`publish` does the last three through the runner for a file that was built elsewhere (a
disk image): copy, rename, marker, prune, each one journaled.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .paths import PACKAGE_DIR, cache_path

MARKER = ".complete.json"


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys; paths and other objects as strings)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def key(obj: Any, length: int = 16) -> str:
    """The cache key of ``obj``: the first ``length`` hex digits of :func:`digest`."""
    return digest(obj)[:length]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_hash(files: list[str], base: Path = PACKAGE_DIR) -> dict[str, str]:
    """{file: sha256[:16]} of the project's files that decide an artefact (paths under ``base``).
    A listed file that does not exist is an error: a key without its code would be wrong."""
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(f"cache key: {', '.join(missing)} not found under {base}; the list of files that "
                                "decide this artefact is out of date")
    return {f: file_sha256(base / f)[:16] for f in files}


@contextlib.contextmanager
def lock(path: str | os.PathLike, plan: bool = False) -> Iterator[None]:
    """An exclusive lock file (waits while another process holds it). Nothing happens in plan mode."""
    if plan:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _locked_now(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` (without waiting)."""
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class Entry:
    """One cache entry: a folder ``<kind>/<name>`` whose content is valid once it is marked complete."""

    kind: str
    name: str

    @property
    def path(self) -> Path:
        return cache_path(self.kind, self.name)

    @property
    def lock_path(self) -> Path:
        return cache_path(self.kind, f"{self.name}.lock")

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def lock(self, plan: bool = False):
        return lock(self.lock_path, plan)

    def complete(self) -> bool:
        return self.marker.is_file()

    def info(self) -> dict:
        """What was recorded when the entry was completed ({} when it is not complete)."""
        try:
            return json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return {}

    def mark_complete(self, info: dict | None = None) -> None:
        """Written last, atomically: from now on the entry may be used."""
        tmp = self.marker.with_name(MARKER + ".tmp")
        tmp.write_text(json.dumps(info or {}, indent=2, default=str))
        os.replace(tmp, self.marker)

    def discard_incomplete(self) -> bool:
        """Remove a half-written entry left by an interrupted run; True when one was removed."""
        if self.path.exists() and not self.complete():
            shutil.rmtree(self.path)
            return True
        return False


def _beyond_newest(kind: str, keep: int, newest: str | None = None) -> list[Path]:
    """Complete entries of ``kind`` beyond the ``keep`` most recently completed (``newest``, when
    given, counts as the newest of all), less those whose lock another process holds."""
    root = cache_path(kind)
    if not root.is_dir():
        return []
    entries = sorted((p for p in root.iterdir() if p.is_dir() and (p / MARKER).exists() and p.name != newest),
                     key=lambda p: (p / MARKER).stat().st_mtime, reverse=True)
    return [p for p in entries[max(keep - (newest is not None), 0):] if not _locked_now(root / f"{p.name}.lock")]


def keep_newest(kind: str, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used entries of ``kind`` (folders with a marker);
    entries whose lock is held are never removed. Returns what was removed."""
    removed = []
    for p in _beyond_newest(kind, keep):
        shutil.rmtree(p)
        removed.append(p)
    return removed


def publish(runner, src: str | os.PathLike, entry: Entry, info: dict, keep: int = 2,
            name: str | None = None) -> Path:
    """Put the finished file ``src`` into ``entry`` as ``name`` (default: its own name), all through
    ``runner`` (journaled; planned in plan mode): copy it to a temporary name, rename it into place,
    write the completion marker (``info``) last, then remove all but the ``keep`` newest entries of
    the kind. Returns the file's path in the cache."""
    dst = entry.path / (name or Path(src).name)
    tmp = dst.with_name(f".{dst.name}.tmp")
    with entry.lock(runner.plan):
        runner.work(["mkdir", "-p", str(entry.path)], quiet=True)
        runner.work(["cp", "--sparse=always", str(src), str(tmp)], note=f"into the cache ({entry.kind})")
        runner.work(["mv", str(tmp), str(dst)], quiet=True)
        runner.write_file(entry.marker, json.dumps(info, indent=2, default=str) + "\n",
                          note="the cache entry is complete")
    for old in _beyond_newest(entry.kind, keep, newest=entry.name):
        runner.work(["rm", "-rf", str(old)], note=f"an older {entry.kind} entry (the newest {keep} are kept)")
    return dst
