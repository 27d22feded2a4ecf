"""Settings of the running host changed for a measurement, and put back afterwards.

Comparing "this machine as found" with "Synapse's settings" means changing some settings of the
running system between invocations (transparent huge pages, their defrag mode, reserved huge
pages). Each knob is a :class:`LiveSetting`: read, write a value, read back, all through the
runner (so the journal shows every change). :class:`LiveState` puts the host into the state a
configuration asks for before each invocation and restores what it found when the measurement
ends: normally, on an exception, on Ctrl-C and on SIGTERM. Before its first change it writes a
ledger of the original values under ``/run/synapse``; a later run that finds a ledger (the process
was killed before it could restore) restores those values first. ``/run`` is emptied at boot, and
so are these settings, so a ledger never outlives what it describes.

Per-process settings (scheduling policy, nice value, CPU affinity) need no restoring: they are an
argv prefix (``chrt``, ``nice``, ``taskset``) that dies with the process; :func:`process_prefix`
builds it and :func:`read_process_settings` reads back what a process started with it gets.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LEDGER = Path("/run/synapse/live-restore.json")


def bracketed(text: str | None) -> str | None:
    """Pure: the selected word of a sysfs choice file, ``always [madvise] never`` -> ``madvise``."""
    m = re.search(r"\[([\w+]+)\]", text or "")
    return m.group(1) if m else None


class LiveSetting:
    """One knob of the running system. Subclasses implement :meth:`read` and :meth:`write`."""

    name: str = ""
    why: str = ""

    def read(self, runner) -> str | None:
        raise NotImplementedError

    def write(self, runner, value: str) -> None:
        raise NotImplementedError

    def unavailable(self, runner) -> str | None:
        """Why this host cannot change the setting (None when it can)."""
        return None if self.read(runner) is not None else "not present on this host"


class SysfsChoice(LiveSetting):
    """A sysfs file that lists choices with the active one in brackets."""

    def __init__(self, name: str, path: str, why: str = ""):
        self.name, self.path, self.why = name, path, why

    def read(self, runner):
        r = runner.probe(["cat", self.path], check=False, quiet=True)
        return bracketed(r.stdout) if r.rc == 0 else None

    def write(self, runner, value):
        # sysfs takes a plain write; the runner's atomic file write (temp file + rename) cannot work here
        runner.change(["tee", self.path], input=f"{value}\n", quiet=True, note=f"live setting {self.name}")


class SysctlValue(LiveSetting):
    """A sysctl of the running kernel (``sysctl -w``), not a file under /etc."""

    def __init__(self, name: str, key: str, why: str = ""):
        self.name, self.key, self.why = name, key, why

    def read(self, runner):
        r = runner.probe(["sysctl", "-n", self.key], check=False, quiet=True)
        return r.stdout.strip() if r.rc == 0 else None

    def write(self, runner, value):
        runner.change(["sysctl", "-w", f"{self.key}={value}"], quiet=True, note=f"live setting {self.name}")


class CpuGovernor(LiveSetting):
    """The cpufreq governor of every CPU (absent in most VMs: the hypervisor owns the clocks)."""

    name = "cpufreq governor"
    why = "performance keeps the clock up between tokens; absent where the hypervisor owns the clocks"

    def _files(self, runner) -> list[str]:
        r = runner.probe(["find", "/sys/devices/system/cpu", "-mindepth", "3", "-maxdepth", "3",
                          "-path", "*/cpufreq/scaling_governor"], check=False, quiet=True)
        return sorted(r.stdout.split()) if r.rc == 0 else []

    def read(self, runner):
        files = self._files(runner)
        if not files:
            return None
        r = runner.probe(["cat", *files], check=False, quiet=True)
        vals = set(r.stdout.split())
        return vals.pop() if len(vals) == 1 else ",".join(sorted(vals))

    def write(self, runner, value):
        for f in self._files(runner):
            runner.change(["tee", f], input=f"{value}\n", quiet=True, note="live setting cpufreq governor")

    def unavailable(self, runner):
        return None if self._files(runner) else "no cpufreq on this host (the hypervisor or firmware owns the clocks)"


#: the host settings a measurement may change, by name
KNOWN: dict[str, LiveSetting] = {s.name: s for s in [
    SysfsChoice("thp", "/sys/kernel/mm/transparent_hugepage/enabled",
                "huge pages for anonymous memory: fewer TLB misses on weights read into memory (-lm none) "
                "and on the KV cache"),
    SysfsChoice("thp_defrag", "/sys/kernel/mm/transparent_hugepage/defrag",
                "whether a fault may stall to compact memory for a huge page"),
    SysctlValue("hugepages", "vm.nr_hugepages", "2 MiB pages reserved up front (hugetlbfs)"),
    CpuGovernor(),
]}


@dataclass
class Change:
    """One change of one setting, as the record shows it."""

    setting: str
    action: str  # apply | restore | restore-ledger
    requested: str
    before: str | None
    after: str | None
    ok: bool
    for_config: str = ""
    time: float = 0.0


@dataclass
class LiveState:
    """The host's live settings during a measurement: ``with LiveState(run) as live: live.ensure({...})``."""

    run: Any
    settings: dict[str, LiveSetting] = field(default_factory=lambda: dict(KNOWN))
    ledger: Path = LEDGER
    original: dict[str, str | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    _current: dict[str, str | None] = field(default_factory=dict)
    _old_term: Any = None

    @property
    def runner(self):
        return self.run.runner

    def __enter__(self) -> "LiveState":
        self.restore_leftovers()
        for name, s in self.settings.items():
            why = s.unavailable(self.runner)
            if why:
                self.unavailable[name] = why
                continue
            self.original[name] = self._current[name] = s.read(self.runner)
        if not self.runner.plan:
            self.runner.write_file(self.ledger, json.dumps({"pid": os.getpid(), "original": self.original,
                                                            "time": time.time()}, indent=1),
                                   note="what to restore if this process dies before it can")
        if threading_main():
            self._old_term = signal.signal(signal.SIGTERM, _raise_on_term)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.restore()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)

    def ensure(self, wanted: dict[str, str], label: str = "") -> list[Change]:
        """Put the host into ``wanted`` (settings not named go back to what was found)."""
        bad = [k for k in wanted if k not in self.settings]
        if bad:
            raise ValueError(f"unknown live setting(s) {bad}: known are {sorted(self.settings)}")
        out = []
        for name, s in self.settings.items():
            if name in self.unavailable:
                continue
            target = wanted.get(name, self.original.get(name))
            if target is None or self._current.get(name) == target:
                continue
            before = self._current.get(name)
            s.write(self.runner, target)
            after = target if self.runner.plan else s.read(self.runner)
            self._current[name] = after
            ch = Change(name, "apply" if target != self.original.get(name) else "restore", target, before, after,
                        after == target, label, time.time())
            self.changes.append(ch)
            out.append(ch)
            if not ch.ok:
                raise RuntimeError(f"live setting {name}: wrote {target!r}, reads back {after!r}: the host does not "
                                   "accept it; leave it out of the configuration")
        return out

    def restore(self) -> list[Change]:
        """Everything back to what was found; then the ledger is removed."""
        out = []
        for name, s in self.settings.items():
            want = self.original.get(name)
            if name in self.unavailable or want is None or self._current.get(name) == want:
                continue
            before = self._current.get(name)
            s.write(self.runner, want)
            after = want if self.runner.plan else s.read(self.runner)
            self._current[name] = after
            ch = Change(name, "restore", want, before, after, after == want, "end of measurement", time.time())
            self.changes.append(ch)
            out.append(ch)
        if not self.runner.plan and self.ledger.exists():
            self.runner.change(["rm", "-f", str(self.ledger)], quiet=True, note="live settings restored")
        return out

    def restore_leftovers(self) -> list[Change]:
        """A ledger left by a process that died before restoring: put its originals back. (Plan
        mode changes nothing, so it neither needs nor touches a ledger.)"""
        if self.runner.plan or not self.ledger.exists():
            return []
        data = read_ledger(self.ledger)
        pid = data.get("pid")
        if ledger_holder(self.ledger):
            raise RuntimeError(f"another measurement (pid {pid}) holds the host's live settings ({self.ledger}); "
                               "wait for it to finish")
        out = []
        for name, want in (data.get("original") or {}).items():
            s = self.settings.get(name)
            if s is None or want is None:
                continue
            before = s.read(self.runner)
            if before != want:
                s.write(self.runner, want)
                after = want if self.runner.plan else s.read(self.runner)
                ch = Change(name, "restore-ledger", want, before, after, after == want,
                            f"left by pid {pid}", time.time())
                self.changes.append(ch)
                out.append(ch)
        if not self.runner.plan:
            self.runner.change(["rm", "-f", str(self.ledger)], quiet=True, note="leftover live settings restored")
        return out

    def record(self) -> dict:
        return {"original": self.original, "unavailable": self.unavailable,
                "changes": [asdict(c) for c in self.changes],
                "restored": all(self._current.get(k) == v for k, v in self.original.items())}

    def table(self):
        import pandas as pd

        return pd.DataFrame([asdict(c) for c in self.changes],
                            columns=["setting", "action", "requested", "before", "after", "ok", "for_config"])


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_on_term(signum, frame):
    raise SystemExit(f"terminated by signal {signum}: live settings are being restored")


def read_ledger(ledger: Path) -> dict:
    """The ledger's content ({} when it is missing or unreadable: cut by a kill while written)."""
    try:
        return json.loads(Path(ledger).read_text())
    except (OSError, ValueError):
        return {}


def ledger_holder(ledger: Path) -> int | None:
    """The pid of another process, still running, whose measurement wrote ``ledger`` (its settings
    are its own to restore); None when the writer is gone and the ledger is a leftover."""
    pid = read_ledger(ledger).get("pid")
    return pid if pid and pid != os.getpid() and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- per-process settings: an argv prefix ---------------------------------------------------------
@dataclass(frozen=True)
class ProcessSettings:
    """How a process is started: scheduling policy and nice value (as the Phase 6 unit's
    ``CPUSchedulingPolicy=``/``Nice=``), CPU affinity (``CPUAffinity=``). None = as found."""

    policy: str | None = None  # batch | other | idle
    nice: int | None = None
    cpus: tuple[int, ...] | None = None

    def prefix(self) -> list[str]:
        return process_prefix(self)

    def shown(self) -> str:
        parts = []
        if self.policy:
            parts.append(f"SCHED_{self.policy.upper()}")
        if self.nice is not None:
            parts.append(f"nice {self.nice}")
        if self.cpus is not None:
            parts.append(f"CPUs {','.join(map(str, self.cpus))}")
        return ", ".join(parts) or "as found"


def process_prefix(p: ProcessSettings) -> list[str]:
    """``chrt --batch 0 nice -n -5 taskset -c 0,1`` (each part only when asked for)."""
    out: list[str] = []
    if p.policy:
        out += ["chrt", f"--{p.policy}", "0"]
    if p.nice is not None:
        out += ["nice", "-n", str(p.nice)]
    if p.cpus is not None:
        out += ["taskset", "-c", ",".join(map(str, p.cpus))]
    return out


#: what a process started with a prefix reports about itself
PROCESS_PROBE = ("import os; print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), "
                 "','.join(map(str, sorted(os.sched_getaffinity(0)))))")
POLICY_NAMES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle"}


def parse_process_probe(text: str) -> dict[str, Any]:
    """Pure: ``3 -5 0,1`` -> {"policy": "batch", "nice": -5, "cpus": (0, 1)}."""
    parts = (text or "").split()
    if len(parts) != 3:
        return {}
    return {"policy": POLICY_NAMES.get(int(parts[0]), parts[0]), "nice": int(parts[1]),
            "cpus": tuple(int(c) for c in parts[2].split(",") if c)}


def read_process_settings(runner, p: ProcessSettings) -> dict[str, Any]:
    """Start a tiny process with the same prefix and read back what it got (policy, nice, CPUs)."""
    r = runner.probe([*p.prefix(), sys.executable, "-c", PROCESS_PROBE], check=False, quiet=True)
    got = parse_process_probe(r.stdout) if r.rc == 0 else {}
    want = {"policy": p.policy, "nice": p.nice, "cpus": p.cpus}
    got["matches"] = bool(got) and all(v is None or got.get(k) == v for k, v in want.items())
    return got
