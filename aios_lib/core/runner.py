"""The one door to the operating system.

Every process Synapse starts goes through :class:`Runner`. It

* runs argv lists (never a shell string) with ``LC_ALL=C``, optional cwd/env/timeout/stdin,
  optionally inside a target root (``arch-chroot``/``chroot``);
* captures exit code, stdout, stderr, start time and duration into the run's journal;
* streams output while it runs and shows progress on long commands;
* in plan mode records changing commands as planned and runs none of them
  (read-only probes still run, so the plan is computed from real facts);
* refuses a destructive command unless the parameters confirm that exact device.

File writes that change a system go through :meth:`Runner.write_file` for the same reasons.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .journal import Journal
from .progress import ProgressSink, make_sink

#: What a command does to the system it runs on.
PROBE = "probe"  # reads only: runs in plan mode too
CHANGE = "change"  # changes files, packages, settings: planned only in plan mode
WORK = "work"  # heavy work that changes only the cache or the record (builds, benchmarks): planned only
DESTRUCTIVE = "destructive"  # writes a block device: needs a matching confirmation


class CommandFailed(RuntimeError):
    """A command exited non-zero (or timed out). Names the command, the code and stderr's tail."""

    def __init__(self, result: "CommandResult"):
        self.result = result
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-12:]
        what = "timed out" if result.timed_out else f"exited {result.rc}"
        msg = f"command {what}: {result.cmdline}"
        if tail:
            msg += "\n  stderr (last lines):\n    " + "\n    ".join(tail)
        super().__init__(msg)


class DestructiveRefused(PermissionError):
    """A destructive command was asked for without a matching confirmation; nothing ran."""


@dataclass
class CommandResult:
    argv: list[str]
    kind: str
    rc: int | None
    stdout: str
    stderr: str
    started: float
    duration: float
    planned: bool = False
    timed_out: bool = False
    cwd: str | None = None
    root: str | None = None
    device: str | None = None
    note: str | None = None

    @property
    def cmdline(self) -> str:
        return shlex.join(self.argv)

    @property
    def ok(self) -> bool:
        return self.planned or self.rc == 0

    def _repr_markdown_(self) -> str:  # how a result shows itself in a notebook cell
        if self.planned:
            return f"**planned, not run** (`{self.kind}`)\n\n```\n$ {self.cmdline}\n```"
        out = (self.stdout or "").rstrip()
        lines = out.splitlines()
        if len(lines) > 40:
            out = "\n".join(lines[:20] + [f"... ({len(lines) - 40} lines) ..."] + lines[-20:])
        return f"`$ {self.cmdline}` → rc={self.rc} in {self.duration:.1f}s\n\n```\n{out}\n```"


@dataclass
class Runner:
    """Runs and records commands for one run of one phase."""

    journal: Journal
    plan: bool = False
    confirmed_devices: frozenset[str] = frozenset()
    phase: str = ""
    sink_factory: Callable[[str], ProgressSink] = make_sink
    #: seconds of silence after which a long command starts showing progress lines
    progress_after: float = 5.0
    history: list[CommandResult] = field(default_factory=list)

    # ---- commands -------------------------------------------------------------------
    def probe(self, argv: Sequence[str], **kw) -> CommandResult:
        """Run a read-only command (also in plan mode)."""
        return self.run(argv, kind=PROBE, **kw)

    def change(self, argv: Sequence[str], **kw) -> CommandResult:
        """Run a command that changes the system (planned only, in plan mode)."""
        return self.run(argv, kind=CHANGE, **kw)

    def work(self, argv: Sequence[str], **kw) -> CommandResult:
        """Run a build or benchmark (planned only, in plan mode)."""
        return self.run(argv, kind=WORK, **kw)

    def destructive(self, argv: Sequence[str], device: str, **kw) -> CommandResult:
        """Run a command that writes the block device ``device`` (needs confirmation)."""
        return self.run(argv, kind=DESTRUCTIVE, device=device, **kw)

    def run(
        self,
        argv: Sequence[str],
        *,
        kind: str = CHANGE,
        device: str | None = None,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        unset_env: Iterable[str] = (),
        timeout: float | None = None,
        input: str | bytes | None = None,
        root: str | os.PathLike | None = None,
        check: bool = True,
        progress: Callable[[str], float | None] | None = None,
        note: str | None = None,
        quiet: bool = False,
    ) -> CommandResult:
        if kind not in (PROBE, CHANGE, WORK, DESTRUCTIVE):
            raise ValueError(f"unknown command kind {kind!r}")
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        if root is not None:
            argv = self._in_root(Path(root), argv)
        if kind == DESTRUCTIVE:
            if self.plan and device and not (_device_keys(device) & set(self.confirmed_devices)):
                # plan mode runs nothing: list the step, and say that a real run would refuse it
                note = (note + "; " if note else "") + (f"a real run refuses this until target.confirm is "
                                                        f"exactly {device!r}")
            else:
                self._guard(argv, device)
        started = time.time()
        if self.plan and kind != PROBE:
            result = CommandResult(
                argv, kind, None, "", "", started, 0.0, planned=True,
                cwd=str(cwd) if cwd else None, root=str(root) if root else None,
                device=device, note=note,
            )
            self._record(result)
            if not quiet:
                self._say(f"[plan] {result.cmdline}")
            return result

        full_env = dict(os.environ)
        for k in unset_env:
            full_env.pop(k, None)
        full_env.update(env or {})
        full_env["LC_ALL"] = "C"
        full_env.setdefault("DEBIAN_FRONTEND", "noninteractive")
        result = self._execute(argv, kind, cwd, full_env, timeout, input, progress, quiet)
        result.root, result.device, result.note = (str(root) if root else None), device, note
        self._record(result)
        if check and result.rc != 0:
            raise CommandFailed(result)
        return result

    # ---- background processes ----------------------------------------------------------
    def spawn(self, argv: Sequence[str], *, kind: str = WORK, cwd: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, unset_env: Iterable[str] = (),
              note: str | None = None) -> "Background":
        """Start a long-running process (a server) in the background and return its handle.

        The journal gets one entry when it stops (argv, exit code, output, how long it ran).
        In plan mode nothing starts: the entry is journaled as planned now and the handle's
        ``stop()`` does nothing. A handle is a context manager; leaving it stops the process
        (SIGTERM to its process group, SIGKILL after a timeout). Processes still running when
        Python exits are stopped too.
        """
        if kind not in (CHANGE, WORK):
            raise ValueError(f"spawn kind must be change or work, not {kind!r}")
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        started = time.time()
        if self.plan:
            result = CommandResult(argv, kind, None, "", "", started, 0.0, planned=True,
                                   cwd=str(cwd) if cwd else None, note=note or "background")
            self._record(result)
            self._say(f"[plan] {result.cmdline} &")
            return Background(self, argv, kind, None, started, cwd, note, planned_result=result)
        full_env = dict(os.environ)
        for k in unset_env:
            full_env.pop(k, None)
        full_env.update(env or {})
        full_env["LC_ALL"] = "C"
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as e:
            result = CommandResult(argv, kind, 127, "", str(e), started, time.time() - started,
                                   cwd=str(cwd) if cwd else None, note=note or "background")
            self._record(result)
            raise CommandFailed(result) from None
        return Background(self, argv, kind, proc, started, cwd, note)

    # ---- files ----------------------------------------------------------------------
    def write_file(self, path: str | os.PathLike, content: str | bytes, mode: int | None = None,
                   note: str | None = None) -> CommandResult:
        """Write a file that configures a system; journaled, and only planned in plan mode.

        The write is atomic (temp file + rename) so an interrupted run leaves no half file.
        """
        path = Path(path)
        data = content.encode() if isinstance(content, str) else content
        argv = ["write", str(path), f"({len(data)} bytes" + (f", mode {mode:o})" if mode is not None else ")")]
        started = time.time()
        if self.plan:
            result = CommandResult(argv, CHANGE, None, _preview(data), "", started, 0.0, planned=True, note=note)
            self._record(result)
            self._say(f"[plan] write {path}")
            return result
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.aios-tmp")
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        result = CommandResult(argv, CHANGE, 0, _preview(data), "", started, time.time() - started, note=note)
        self._record(result)
        return result

    # ---- internals ------------------------------------------------------------------
    def _in_root(self, root: Path, argv: list[str]) -> list[str]:
        # arch-chroot mounts /proc, /sys, /dev and resolv.conf for us; plain chroot does not.
        from shutil import which

        if which("arch-chroot"):
            return ["arch-chroot", str(root), *argv]
        return ["chroot", str(root), *argv]

    def _guard(self, argv: list[str], device: str | None) -> None:
        if not device:
            raise DestructiveRefused(f"refused: destructive command names no device: {shlex.join(argv)}")
        wanted = _device_keys(device)
        if not (wanted & set(self.confirmed_devices)):
            raise DestructiveRefused(
                f"refused: `{shlex.join(argv)}` would write {device}, but the parameters do not confirm it. "
                f"Set target.confirm to exactly {device!r} in the parameter file if this is the disk to erase."
            )

    def _execute(self, argv, kind, cwd, env, timeout, input, progress, quiet) -> CommandResult:
        started = time.time()
        sink = None if quiet else self.sink_factory(shlex.join(argv))
        try:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            return CommandResult(argv, kind, 127, "", f"{e}", started, time.time() - started, cwd=str(cwd) if cwd else None)
        out_chunks: list[str] = []
        err_chunks: list[str] = []
        state = {"last": "", "frac": None}

        def pump(stream, chunks):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                chunks.append(line)
                state["last"] = line.rstrip()[-160:] or state["last"]
                if progress is not None:
                    try:
                        f = progress(line)
                    except Exception:  # a progress parser must never break a build
                        f = None
                    if f is not None:
                        state["frac"] = f
            stream.close()

        threads = [threading.Thread(target=pump, args=(proc.stdout, out_chunks), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, err_chunks), daemon=True)]
        for t in threads:
            t.start()
        if input is not None:
            try:
                proc.stdin.write(input.encode() if isinstance(input, str) else input)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = False
        shown = False
        while True:
            try:
                proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.time() - started
                if timeout is not None and elapsed > timeout:
                    timed_out = True
                    _kill_group(proc)
                    proc.wait()
                    break
                if sink is not None and elapsed >= self.progress_after:
                    sink.update(elapsed, state["frac"], state["last"])
                    shown = True
        for t in threads:
            t.join(timeout=5)
        duration = time.time() - started
        rc = proc.returncode if not timed_out else 124
        if sink is not None and shown:
            sink.done(duration, rc)
        return CommandResult(argv, kind, rc, "".join(out_chunks), "".join(err_chunks), started, duration,
                             timed_out=timed_out, cwd=str(cwd) if cwd else None)

    def _record(self, result: CommandResult) -> None:
        self.history.append(result)
        self.journal.append(result, phase=self.phase)

    def _say(self, text: str) -> None:
        print(text, flush=True)

    def planned(self) -> list[CommandResult]:
        return [r for r in self.history if r.planned]


_LIVE: "set[Background]" = set()


class Background:
    """A process started by :meth:`Runner.spawn`: ``pid``, ``alive()``, ``output()``, ``stop()``."""

    def __init__(self, runner: Runner, argv: list[str], kind: str, proc: subprocess.Popen | None,
                 started: float, cwd, note: str | None, planned_result: CommandResult | None = None):
        self.runner, self.argv, self.kind, self.proc, self.started = runner, argv, kind, proc, started
        self.cwd, self.note = (str(cwd) if cwd else None), note
        self.result: CommandResult | None = planned_result
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads: list[threading.Thread] = []
        if proc is not None:
            for stream, chunks in ((proc.stdout, self._out), (proc.stderr, self._err)):
                t = threading.Thread(target=self._pump, args=(stream, chunks), daemon=True)
                t.start()
                self._threads.append(t)
            _LIVE.add(self)

    @staticmethod
    def _pump(stream, chunks: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            chunks.append(raw.decode("utf-8", "replace"))
        stream.close()

    @property
    def planned(self) -> bool:
        return self.proc is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def cmdline(self) -> str:
        return shlex.join(self.argv)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """stdout and stderr so far (stderr last)."""
        return "".join(self._out) + "".join(self._err)

    def stop(self, timeout: float = 10.0) -> CommandResult:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL; journal the result."""
        if self.result is not None:
            return self.result
        import signal

        proc = self.proc
        killed = False
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        _LIVE.discard(self)
        rc = proc.returncode
        self.result = CommandResult(self.argv, self.kind, rc, "".join(self._out), "".join(self._err),
                                    self.started, time.time() - self.started, timed_out=killed,
                                    cwd=self.cwd, note=(self.note or "background") + (" (killed)" if killed else ""))
        self.runner._record(self.result)
        return self.result

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "planned" if self.planned else ("running" if self.alive() else f"exited {self.proc.returncode}")
        return f"<Background pid={self.pid} {state}: {self.cmdline}>"


def _stop_live() -> None:
    for b in list(_LIVE):
        try:
            b.stop(timeout=3)
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_stop_live)


def _device_keys(device: str) -> set[str]:
    """A device is confirmed by its path as given or by what it resolves to."""
    keys = {device}
    try:
        keys.add(str(Path(device).resolve()))
    except OSError:
        pass
    return keys


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except Exception:
            pass


def _preview(data: bytes, limit: int = 4000) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes of binary data>"
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"
