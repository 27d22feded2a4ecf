"""The one door to the operating system.

Every process Synapse starts goes through :class:`Runner`. It

* runs argv lists (never a shell string) with ``LC_ALL=C``, optional cwd/env/timeout/stdin,
  optionally inside a target root (``arch-chroot``/``chroot``);
* captures exit code, stdout, stderr, start time and duration into the run's journal;
* streams output while it runs and shows progress on long commands;
* in plan mode records changing commands as planned and runs none of them
  (read-only probes still run, so the plan is computed from real facts);
* refuses a destructive command unless the parameters confirm that exact device;
* stops what it started when this process dies, even by SIGKILL (:class:`_Watchdog`), and lets
  the commands hold the build-cache locks this process holds, so a rerun never builds beside an
  orphan of a killed run.

File writes that change a system go through :meth:`Runner.write_file` for the same reasons.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .cache import held_lock_fds
from .journal import Journal
from .progress import ProgressSink, make_sink
from .result import CommandFailed, CommandResult, DestructiveRefused

__all__ = ["Runner", "Background", "CommandResult", "CommandFailed", "DestructiveRefused",
           "PROBE", "CHANGE", "WORK", "DESTRUCTIVE"]

#: What a command does to the system it runs on.
PROBE = "probe"  # reads only: runs in plan mode too
CHANGE = "change"  # changes files, packages, settings: planned only in plan mode
WORK = "work"  # heavy work that changes only the cache or the record (builds, benchmarks): planned only
DESTRUCTIVE = "destructive"  # writes a block device: needs a matching confirmation


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
    #: why this runner only plans (see :meth:`planning`); added to the note of each planned command
    plan_reason: str | None = None
    #: what is still missing when the parameters confirm a device but someone must also confirm it
    #: (a prompt in an interactive notebook); said when a destructive command is refused
    awaiting: str | None = None

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

    def planning(self, reason: str | None = None) -> "Runner":
        """This runner in plan mode: same journal, same history, same confirmations, nothing runs.

        For commands a phase shows without running them in a real run (an install that is switched
        off); they reach ``commands.jsonl`` as planned, with ``reason`` in their note.
        """
        return dataclasses.replace(self, plan=True, plan_reason=reason or self.plan_reason)

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
        if self.plan and kind != PROBE:
            return self._planned(argv, kind, cwd=cwd, root=root, device=device, note=note,
                                 say=None if quiet else "")
        full_env = _environment(env, unset_env, noninteractive=True)
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
        if self.plan:
            result = self._planned(argv, kind, cwd=cwd, note=note or "background", say=" &")
            return Background(self, argv, kind, None, result.started, cwd, note, planned_result=result)
        # servers install nothing: spawn has never set DEBIAN_FRONTEND
        full_env = _environment(env, unset_env, noninteractive=False)
        started = time.time()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as e:
            result = _not_found(argv, kind, started, e, cwd, note=note or "background")
            self._record(result)
            raise CommandFailed(result) from None
        _WATCHDOG.watch(proc.pid)
        return Background(self, argv, kind, proc, started, cwd, note)

    # ---- observations -------------------------------------------------------------------
    def note(self, text: str) -> CommandResult:
        """Journal a decision that runs no command (what a rerun found and does about it):
        an entry ``# text``, a probe with exit code 0, in plan mode too."""
        result = CommandResult(["#", text], PROBE, 0, "", "", time.time(), 0.0, note="observation")
        self._record(result)
        if not self.plan:
            self._say(f"# {text}")
        return result

    # ---- files ----------------------------------------------------------------------
    def write_file(self, path: str | os.PathLike, content: str | bytes, mode: int | None = None,
                   note: str | None = None) -> CommandResult:
        """Write a file that configures a system; journaled, and only planned in plan mode.

        The write is atomic (temp file + rename) so an interrupted run leaves no half file.
        """
        path = Path(path)
        data = content.encode() if isinstance(content, str) else content
        argv = ["write", str(path), f"({len(data)} bytes" + (f", mode {mode:o})" if mode is not None else ")")]
        if self.plan:
            return self._planned(argv, CHANGE, note=note, stdout=_preview(data), shown=f"write {path}")
        started = time.time()
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
            if self.awaiting:
                raise DestructiveRefused(f"refused: `{shlex.join(argv)}` would write {device}: {self.awaiting}")
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
                # the cache locks this process holds: should it die, the lock stays held until the
                # command has stopped too, so no rerun builds into the same folder beside it
                pass_fds=held_lock_fds(),
            )
        except FileNotFoundError as e:
            return _not_found(argv, kind, started, e, cwd)
        _WATCHDOG.watch(proc.pid)
        try:
            return self._wait(proc, argv, kind, cwd, timeout, input, progress, sink, started)
        finally:
            _WATCHDOG.forget(proc.pid)

    def _wait(self, proc, argv, kind, cwd, timeout, input, progress, sink, started) -> CommandResult:
        out_chunks: list[str] = []
        err_chunks: list[str] = []
        state = {"last": "", "frac": None}

        def on_line(line: str) -> None:
            state["last"] = line.rstrip()[-160:] or state["last"]
            if progress is not None:
                try:
                    f = progress(line)
                except Exception:  # a progress parser must never break a build
                    f = None
                if f is not None:
                    state["frac"] = f

        threads = _start_pumps(proc, out_chunks, err_chunks, on_line)
        if input is not None:
            try:
                proc.stdin.write(input.encode() if isinstance(input, str) else input)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = False
        shown = False
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.time() - started
                    if timeout is not None and elapsed > timeout:
                        timed_out = True
                        _terminate(proc, grace=5)
                        proc.wait()
                        break
                    if sink is not None and elapsed >= self.progress_after:
                        sink.update(elapsed, state["frac"], state["last"])
                        shown = True
        except BaseException:
            # Ctrl-C or SIGTERM of this process: the command's whole process group stops too, and the
            # journal shows the command as interrupted before the exception goes on
            _terminate(proc, grace=5)
            for th in threads:
                th.join(timeout=5)
            self._record(CommandResult(argv, kind, proc.returncode, "".join(out_chunks), "".join(err_chunks),
                                       started, time.time() - started, cwd=str(cwd) if cwd else None,
                                       note="interrupted"))
            raise
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

    def _planned(self, argv: list[str], kind: str, *, cwd=None, root=None, device: str | None = None,
                 note: str | None = None, stdout: str = "", say: str | None = "",
                 shown: str | None = None) -> CommandResult:
        """Journal ``argv`` as planned (not run) and print ``[plan] ...`` unless ``say`` is None
        (``say`` is appended to the line, ``shown`` replaces the command line in it)."""
        if self.plan_reason:
            note = f"{note}; {self.plan_reason}" if note else self.plan_reason
        result = CommandResult(argv, kind, None, stdout, "", time.time(), 0.0, planned=True,
                               cwd=str(cwd) if cwd else None, root=str(root) if root else None,
                               device=device, note=note)
        self._record(result)
        if say is not None:
            self._say(f"[plan] {shown or result.cmdline}{say}")
        return result

    def planned(self) -> list[CommandResult]:
        return [r for r in self.history if r.planned]


class _Watchdog:
    """One small process per Python process that started commands: it learns the process group of
    every command (each runs in a session of its own) and, when this process is gone (normal exit,
    exception, SIGKILL: its end of the pipe closes), stops the groups still running: SIGTERM, then
    SIGKILL after a grace period. Without it a killed ``aios run`` would leave a build, a
    quantisation or a server running, and a rerun would work beside it."""

    CODE = (
        "import os, signal, sys, time\n"
        "groups = set()\n"
        "for line in sys.stdin:\n"
        "    op, _, pid = line.strip().partition(' ')\n"
        "    if pid.isdigit():\n"
        "        (groups.add if op == '+' else groups.discard)(int(pid))\n"
        "def send(g, sig):\n"
        "    try:\n"
        "        os.killpg(g, sig)\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "live = [g for g in groups if send(g, signal.SIGTERM)]\n"
        "end = time.time() + float(sys.argv[1])\n"
        "while live and time.time() < end:\n"
        "    time.sleep(0.1)\n"
        "    live = [g for g in live if send(g, 0)]\n"
        "for g in live:\n"
        "    send(g, signal.SIGKILL)\n"
    )
    #: seconds between SIGTERM and SIGKILL when the parent is gone
    GRACE = 3.0

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0

    def _pipe(self):
        if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
            import sys

            self._proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(self.GRACE)], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True, text=True, bufsize=1)
            self._owner = os.getpid()
        return self._proc.stdin

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                pipe = self._pipe()
                pipe.write(line + "\n")
                pipe.flush()
            except (OSError, ValueError):  # no watchdog (it was killed with us): the command still runs
                self._proc = None

    def watch(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"- {pgid}")


_WATCHDOG = _Watchdog()

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
            self._threads = _start_pumps(proc, self._out, self._err)
            _LIVE.add(self)

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
        proc = self.proc
        killed = _terminate(proc, grace=timeout) if proc.poll() is None else False
        for t in self._threads:
            t.join(timeout=5)
        _LIVE.discard(self)
        _WATCHDOG.forget(proc.pid)
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


def _environment(env: Mapping[str, str] | None, unset_env: Iterable[str], noninteractive: bool) -> dict[str, str]:
    """This process's environment less ``unset_env``, plus ``env``, with ``LC_ALL=C`` (parsable
    output) and, for commands that run to completion, ``DEBIAN_FRONTEND=noninteractive``."""
    full = dict(os.environ)
    for k in unset_env:
        full.pop(k, None)
    full.update(env or {})
    full["LC_ALL"] = "C"
    if noninteractive:
        full.setdefault("DEBIAN_FRONTEND", "noninteractive")
    return full


def _pump(stream, chunks: list[str], on_line: Callable[[str], None] | None = None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        chunks.append(line)
        if on_line is not None:
            on_line(line)
    stream.close()


def _start_pumps(proc: subprocess.Popen, out: list[str], err: list[str],
                 on_line: Callable[[str], None] | None = None) -> list[threading.Thread]:
    """Threads that collect stdout and stderr line by line (so a pipe never fills up)."""
    threads = [threading.Thread(target=_pump, args=(proc.stdout, out, on_line), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, err, on_line), daemon=True)]
    for t in threads:
        t.start()
    return threads


def _terminate(proc: subprocess.Popen, grace: float) -> bool:
    """SIGTERM the process group, wait up to ``grace`` s, then SIGKILL. True when it was killed."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        pass
    try:
        proc.wait(timeout=grace)
        return False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        return True


def _not_found(argv: list[str], kind: str, started: float, err: OSError, cwd, note: str | None = None) -> CommandResult:
    """The result of a program that does not exist: rc 127, as a shell says."""
    return CommandResult(argv, kind, 127, "", str(err), started, time.time() - started,
                         cwd=str(cwd) if cwd else None, note=note)


def _preview(data: bytes, limit: int = 4000) -> str:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"<{len(data)} bytes of binary data>"
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"
