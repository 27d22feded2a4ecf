"""The build cache: ``~/.cache/synapse/<kind>/<key>``, keyed by a digest of everything that decides
the content, written whole or not at all.

Every heavy artefact (llama.cpp builds and sources, models, kernels, disk images, small compiled
probes) uses the same four things:

* :func:`key`: a digest of the inputs (canonical JSON), and :func:`code_hash` for the project's own
  files that decide an artefact (a missing file is an error, never silently skipped);
* :func:`lock`: an exclusive lock next to the entry, so two sessions never build one key at once
  (no-op in plan mode, where nothing is written); the runner's commands hold it too, so a process
  killed in the middle of a build keeps its entry locked until what it started has stopped;
* a completion marker (:meth:`Entry.mark_complete`) written last: an entry without it is a
  half-written leftover of an interrupted run and is never used;
* :func:`keep_newest`: old entries of a kind are removed, newest kept, locked ones never;
* :func:`leftovers`: what interrupted runs left in the cache (entries without their marker,
  partial files), for a rerun to report; each builder cleans or completes its own.

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


#: descriptors of the locks this process holds (the runner passes them to its commands)
_HELD: set[int] = set()


def held_lock_fds() -> tuple[int, ...]:
    """The open lock files of this process: a command started while one is held inherits it, so
    the lock outlives a killed parent until the command has stopped too (an unlock by the parent
    releases it for all of them: they share one open file)."""
    return tuple(sorted(_HELD))


@contextlib.contextmanager
def lock(path: str | os.PathLike, plan: bool = False) -> Iterator[None]:
    """An exclusive lock file (waits while another process holds it, and says so). Nothing
    happens in plan mode."""
    if plan:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {path}: another process holds it (a build of the same entry, or what a killed "
                  "run started, still stopping)", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        _HELD.add(f.fileno())
        try:
            yield
        finally:
            _HELD.discard(f.fileno())
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

    def discard_incomplete(self, runner=None) -> bool:
        """Remove a half-written entry left by an interrupted run; True when one was removed.
        With ``runner`` the removal is a journaled command (planned in plan mode)."""
        if self.path.exists() and not self.complete():
            if runner is not None:
                runner.work(["rm", "-rf", str(self.path)],
                            note=f"a {self.kind} cache entry without its completion marker: an interrupted run's "
                                 "leftover, never used")
            else:
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
        entry.discard_incomplete(runner)  # a copy a killed run left half-done
        runner.work(["mkdir", "-p", str(entry.path)], quiet=True)
        runner.work(["cp", "--sparse=always", str(src), str(tmp)], note=f"into the cache ({entry.kind})")
        runner.work(["mv", str(tmp), str(dst)], quiet=True)
        runner.write_file(entry.marker, json.dumps(info, indent=2, default=str) + "\n",
                          note="the cache entry is complete")
    for old in _beyond_newest(entry.kind, keep, newest=entry.name):
        runner.work(["rm", "-rf", str(old)], note=f"an older {entry.kind} entry (the newest {keep} are kept)")
    return dst


# ---- what interrupted runs left ---------------------------------------------------------------------
#: kinds whose entries are folders completed by :data:`MARKER` (:class:`Entry`)
MARKED_KINDS = ("llama", "llama-decisions", "kernel-src", "kernel-build", "base-image", "synapse-os", "synapse-os-base")
#: kinds whose incomplete entries the next build continues instead of removing
RESUMABLE = {"kernel-build": "kept: make continues the build in it",
             "llama-build": "kept: ninja continues the build in it (what it compiled whole is kept)"}
#: suffixes of files written under a temporary name and renamed into place when whole
PARTIAL_SUFFIXES = (".part", ".tmp", ".aios-tmp")
#: tools' own caches (they check what they keep) and folders remade on every use
UNCHECKED_KINDS = ("ccache", "downloads", "debootstrap", "apt", "probes", "kernel-config", "kernel-stats")


@dataclass(frozen=True)
class Leftover:
    """Something an interrupted run left in the cache: ``what`` it is and what the next use does."""

    path: Path
    what: str  # incomplete entry | partial file | build tree
    action: str  # what the next use does with it
    locked: bool = False  # a process holds its lock now (a build in progress: not a leftover yet)

    def line(self) -> str:
        busy = " (its lock is held now: a build in progress)" if self.locked else ""
        return f"{self.what} {self.path}: {self.action}{busy}"


def classify(kind: str, name: str, is_dir: bool, has_marker: bool, builds_complete: bool | None = None) -> str | None:
    """Pure: what the cache item ``<kind>/<name>`` is when an interrupted run left it, None when
    nothing is wrong with it. ``has_marker``: the folder holds :data:`MARKER`; ``builds_complete``
    (``llama-build`` trees): whether the ``llama/<name>`` entry it builds is complete (None: no
    such entry)."""
    if name.endswith(".lock") or kind in UNCHECKED_KINDS:
        return None
    if not is_dir:
        return "partial file" if name.endswith(PARTIAL_SUFFIXES) else None
    if kind == "llama-build":
        return "build tree" if builds_complete is False else None
    if kind in MARKED_KINDS:
        return None if has_marker else "incomplete entry"
    return None


def _action(kind: str, what: str) -> str:
    if what == "partial file":
        return "removed and written again on the next use"
    return RESUMABLE.get(kind) or "removed and rebuilt on the next use; never used as it is"


def leftovers(root: Path | None = None) -> list[Leftover]:
    """What interrupted runs left under the cache ``root`` (default: the cache): entries without
    their marker, partial files (``*.part``, ``*.tmp``) one level down, build trees of incomplete
    builds. Reads the file system only; ``locked`` says which a process is working on now."""
    from .paths import cache_path

    root = Path(root or cache_path())
    out: list[Leftover] = []
    if not root.is_dir():
        return out
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in UNCHECKED_KINDS):
        kind = kind_dir.name
        for item in sorted(kind_dir.iterdir()):
            is_dir = item.is_dir() and not item.is_symlink()
            builds = None
            if kind == "llama-build" and is_dir and (root / "llama" / item.name).is_dir():
                builds = (root / "llama" / item.name / MARKER).is_file()
            what = classify(kind, item.name, is_dir, is_dir and (item / MARKER).is_file(), builds)
            locks = [kind_dir / f"{item.name}.lock", root / "llama" / f"{item.name}.lock"]
            if what is not None:
                out.append(Leftover(item, what, _action(kind, what), any(_locked_now(p) for p in locks)))
            elif is_dir and kind not in MARKED_KINDS and kind != "llama-build":
                # files renamed into place when whole (models/<sha>/, models/quantized/, stream/<key>/)
                locks += sorted(item.glob("*.lock")) + sorted(item.glob(".*.lock"))
                for f in sorted(item.iterdir()):
                    if classify(kind, f.name, f.is_dir(), False) == "partial file":
                        out.append(Leftover(f, "partial file", _action(kind, "partial file"),
                                            any(_locked_now(p) for p in locks)))
    return out
