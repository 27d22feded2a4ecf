"""Where the panel's numbers come from: llama-server's HTTP API, /proc, /sys, psutil, nvidia-smi.

Reading files and calling psutil starts no process; the one command the panel runs
(``nvidia-smi``, only when it is installed) goes through the runner like every other command.
Each reader has a pure parse function next to it, tested on captured real output.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil
import requests

from ..facts import gather, gpu
from ..facts._text import parse_cpulist
from ..facts.gpu import GpuView
from .metrics import (Rate, RateMeter, Scrape, canonical_metrics, live_rate, missing_core_metrics, parse_metrics,
                      slot_progress)


# ---- llama-server over HTTP -------------------------------------------------------------------
@dataclass
class ServerSnapshot:
    """One poll of the server's endpoints."""

    t: float
    reachable: bool
    error: str = ""
    health: str = ""  # "ok", "loading", ... as /health says
    metrics: str = "unknown"  # "on", "off" (endpoint disabled), "error"
    metrics_text: str = ""
    slots: list | None = None  # /slots (None when the endpoint is off)
    metrics_note: str = ""
    props: dict | None = None
    model_meta: dict | None = None  # /v1/models data[0].meta


class ServerClient:
    """Polls one llama-server. Never raises on network errors: they become an unreachable snapshot."""

    def __init__(self, url: str, timeout: float = 2.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._props: dict | None = None
        self._meta: dict | None = None
        self._slots_on = True

    def _get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=self.timeout)

    def poll(self) -> ServerSnapshot:
        t = time.time()
        try:
            h = self._get("/health")
        except requests.RequestException as e:
            self._props = self._meta = None  # a server that comes back may serve another model
            self._slots_on = True
            return ServerSnapshot(t, False, error=_short_error(e))
        snap = ServerSnapshot(t, True)
        try:
            snap.health = (h.json().get("status") or "") if h.content else ""
        except ValueError:
            snap.health = f"HTTP {h.status_code}"
        if h.status_code == 503:  # still loading the model
            snap.health = snap.health or "loading"
        try:
            m = self._get("/metrics")
            if m.status_code == 200:
                snap.metrics, snap.metrics_text = "on", m.text
            elif m.status_code in (404, 501) or "metrics" in m.text.lower():
                snap.metrics = "off"
                snap.metrics_note = f"HTTP {m.status_code}: start llama-server with --metrics"
            else:
                snap.metrics, snap.metrics_note = "error", f"/metrics: HTTP {m.status_code}"
            if self._props is None and h.status_code == 200:
                p = self._get("/props")
                self._props = p.json() if p.status_code == 200 else {}
                mm = self._get("/v1/models")
                if mm.status_code == 200:
                    data = (mm.json().get("data") or [{}])
                    self._meta = dict(data[0].get("meta") or {}, id=data[0].get("id"))
                else:
                    self._meta = {}
            if self._slots_on:
                sl = self._get("/slots")
                if sl.status_code == 200:
                    snap.slots = sl.json()
                else:  # --no-slots: do not ask again
                    self._slots_on = False
        except requests.RequestException as e:
            return ServerSnapshot(t, False, error=_short_error(e))
        except ValueError as e:  # not JSON: not a llama-server
            snap.error = f"unexpected answer: {e}"
        snap.props, snap.model_meta = self._props, self._meta
        return snap


def _short_error(e: Exception) -> str:
    text = str(e)
    for key in ("Connection refused", "timed out", "Name or service not known", "No route to host",
                "Connection reset", "Remote end closed"):
        if key.lower() in text.lower():
            return key.lower() if key[0].islower() else key
    return text[:120]


def host_port(url: str) -> tuple[str, int]:
    u = urlparse(url if "://" in url else "http://" + url)
    return u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)


def is_local(host: str) -> bool:
    """True when ``host`` names this machine (its processes and /proc are ours to read)."""
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    local = {"0.0.0.0", "::"}
    for nic in psutil.net_if_addrs().values():
        local |= {a.address.split("%")[0] for a in nic}
    for a in addrs:
        try:
            if ipaddress.ip_address(a).is_loopback or a in local:
                return True
        except ValueError:
            continue
    return False


def find_listening_pid(port: int) -> int | None:
    """The local process listening on TCP ``port`` (root sees every process's sockets)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    return None


# ---- model file -------------------------------------------------------------------------------
def gguf_summary(path: str | os.PathLike) -> dict:
    """Name, architecture, file type, context length and tensor count from a GGUF header."""
    from gguf import GGUFReader
    from gguf.constants import LlamaFileType

    r = GGUFReader(str(path), "r")

    def field(key):
        f = r.fields.get(key)
        if f is None or not f.data:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    arch = field("general.architecture")
    ft = field("general.file_type")
    try:
        ft_name = LlamaFileType(int(ft)).name.replace("MOSTLY_", "") if ft is not None else None
    except ValueError:
        ft_name = str(ft)
    n_params = 0
    for t in r.tensors:
        n = 1
        for d in t.shape:
            n *= int(d)
        n_params += n
    return {
        "name": field("general.name"),
        "architecture": arch,
        "file_type": ft_name,
        "context_length": field(f"{arch}.context_length") if arch else None,
        "block_count": field(f"{arch}.block_count") if arch else None,
        "n_tensors": len(r.tensors),
        "n_params": n_params,
        "file_size": Path(path).stat().st_size,
    }


@dataclass
class ModelView:
    name: str | None = None  # what the server calls it (alias, else the file name)
    gguf_name: str | None = None  # general.name in the GGUF header
    architecture: str | None = None
    quant: str | None = None
    size: int | None = None  # bytes of weights (server) or file size
    n_params: int | None = None
    n_ctx: int | None = None  # context per slot the server runs with
    n_ctx_train: int | None = None
    slots: int | None = None
    path: str | None = None
    build: str | None = None


def model_view(props: dict | None, meta: dict | None, gguf: dict | None) -> ModelView:
    """Combine /props, /v1/models meta and the GGUF header (pure)."""
    props, meta, gguf = props or {}, meta or {}, gguf or {}
    path = props.get("model_path") or None
    name = props.get("model_alias") or meta.get("id") or path or gguf.get("name")
    if name and "/" in name:  # without --alias the server calls the model by its path
        name = Path(name).name
    dgs = props.get("default_generation_settings") or {}
    return ModelView(
        name=name,
        gguf_name=gguf.get("name"),
        architecture=gguf.get("architecture") or props.get("model_arch"),
        quant=props.get("model_ftype") or meta.get("ftype") or gguf.get("file_type"),
        size=meta.get("size") or gguf.get("file_size"),
        n_params=meta.get("n_params") or gguf.get("n_params"),
        n_ctx=dgs.get("n_ctx") or meta.get("n_ctx"),
        n_ctx_train=meta.get("n_ctx_train") or gguf.get("context_length"),
        slots=props.get("total_slots"),
        path=path,
        build=props.get("build_info"),
    )


# ---- /proc: the server process and its model mapping -------------------------------------------
@dataclass
class Mapping:
    path: str
    size_kb: int = 0
    rss_kb: int = 0
    pss_kb: int = 0


def parse_smaps(text: str) -> list[Mapping]:
    """/proc/PID/smaps -> one Mapping per mapped region (anonymous ones have path '')."""
    out: list[Mapping] = []
    cur: Mapping | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        head = parts[0]
        if "-" in head and not head.endswith(":"):  # "7f..-7f.. r--p 00000000 08:01 1234  /path"
            cur = Mapping(" ".join(parts[5:]) if len(parts) > 5 else "")
            out.append(cur)
        elif cur is not None and head in ("Size:", "Rss:", "Pss:") and len(parts) >= 2:
            v = int(parts[1])
            if head == "Size:":
                cur.size_kb = v
            elif head == "Rss:":
                cur.rss_kb = v
            else:
                cur.pss_kb = v
    return out


def parse_rollup(text: str) -> dict[str, int]:
    """/proc/PID/smaps_rollup (or status) -> {field: kB}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1])
    return out


def model_resident_kb(maps: list[Mapping], model_path: str | None) -> tuple[int, int, str | None]:
    """(resident kB, mapped kB, path) of the model file's mappings.

    The model is the mapping of ``model_path`` when given (resolved), else the GGUF files mapped.
    """
    want = None
    if model_path:
        try:
            want = str(Path(model_path).resolve())
        except OSError:
            want = model_path
    rss = size = 0
    found = None
    for m in maps:
        p = m.path.replace(" (deleted)", "")
        if (want and (p == want or p == model_path)) or (not want and p.endswith(".gguf")):
            rss += m.rss_kb
            size += m.size_kb
            found = p
    return rss, size, found


@dataclass
class ProcessView:
    pid: int
    name: str = ""
    rss: int = 0  # bytes
    model_rss: int | None = None  # bytes of the model mapping resident in RAM
    model_mapped: int | None = None
    affinity: list[int] | None = None
    threads: int | None = None
    cpu_percent: float | None = None
    note: str = ""


#: the last psutil.Process read: cpu_percent() measures since the previous call on the same object
_PROC: dict[int, psutil.Process] = {}


def read_process(pid: int, model_path: str | None, proc_root: str = "/proc") -> ProcessView | None:
    """The server process: RSS, the model mapping's share of it, CPU affinity."""
    try:
        p = _PROC.get(pid) or psutil.Process(pid)
        _PROC.clear()
        _PROC[pid] = p
        with p.oneshot():
            view = ProcessView(pid, p.name(), p.memory_info().rss, threads=p.num_threads())
            try:
                view.affinity = sorted(p.cpu_affinity())
            except (AttributeError, psutil.Error):
                view.affinity = None
            view.cpu_percent = p.cpu_percent(None)
    except psutil.Error:
        return None
    try:
        maps = parse_smaps(Path(proc_root, str(pid), "smaps").read_text())
        rss_kb, size_kb, _ = model_resident_kb(maps, model_path)
        view.model_rss, view.model_mapped = rss_kb * 1024, size_kb * 1024
    except OSError as e:
        view.note = f"smaps not readable ({e.strerror})"
    return view


# ---- machine memory and CPUs ------------------------------------------------------------------
@dataclass
class MemoryView:
    total: int
    available: int
    free: int
    cache: int  # page cache (Cached + Buffers), including the model file's cached pages
    used: int  # total - free - cache
    model: int | None = None  # resident model mapping of the server
    server_other: int | None = None  # the rest of the server's RSS
    other: int | None = None  # every other use of RAM


def memory_view(proc: ProcessView | None) -> MemoryView:
    vm = psutil.virtual_memory()
    cache = getattr(vm, "cached", 0) + getattr(vm, "buffers", 0)
    used = max(vm.total - vm.free - cache, 0)
    mv = MemoryView(vm.total, vm.available, vm.free, cache, used)
    if proc is not None:
        model = proc.model_rss or 0
        mv.model = proc.model_rss
        mv.server_other = max(proc.rss - model, 0)
        # a file mapping's resident pages are page cache: do not count them twice
        mv.cache = max(cache - model, 0)
        mv.other = max(used - mv.server_other, 0)
    return mv


def sibling_groups(sys_cpu: str | os.PathLike = "/sys/devices/system/cpu") -> list[list[int]]:
    """Logical CPUs grouped by physical core (SMT siblings), from sysfs topology."""
    groups: dict[tuple[int, ...], None] = {}
    base = Path(sys_cpu)
    cpus = sorted((int(d.name[3:]) for d in base.glob("cpu[0-9]*") if d.name[3:].isdigit()))
    for c in cpus:
        f = base / f"cpu{c}" / "topology" / "thread_siblings_list"
        try:
            sib = tuple(sorted(parse_cpulist(f.read_text())))
        except (OSError, ValueError):
            sib = (c,)
        groups.setdefault(sib or (c,), None)
    return [list(g) for g in sorted(groups, key=lambda g: g[0])]


# ---- everything the panel shows, in one poll --------------------------------------------------
@dataclass
class PanelState:
    url: str
    t: float
    reachable: bool = False
    error: str = ""
    down_since: float | None = None
    health: str = ""
    metrics: str = "unknown"
    metrics_note: str = ""
    missing: list[str] = field(default_factory=list)
    model: ModelView = field(default_factory=ModelView)
    gen: Rate | None = None
    prompt: Rate | None = None
    gen_last: Rate | None = None  # the last window in which tokens were generated
    gen_last_t: float | None = None
    prompt_last: Rate | None = None
    gen_avg: float | None = None  # since the server started (counters' totals)
    prompt_avg: float | None = None
    server_gauge_gen: float | None = None  # the server's own averaged gauge, for reference
    sparkline: list[float] = field(default_factory=list)
    live: float | None = None  # tokens/s decoded by requests still running (from /slots)
    processing: float | None = None
    deferred: float | None = None
    tokens_total: float | None = None
    process: ProcessView | None = None
    memory: MemoryView | None = None
    gpus: list[GpuView] | None = None
    cpu: list[float] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    polls: int = 0


class Collector:
    """Polls everything once per call of :meth:`collect`; keeps the rate meter between polls."""

    def __init__(self, url: str, runner=None, pid: int | None = None, window_s: float = 300.0,
                 gpu_every_s: float = 5.0):
        self.url = url if "://" in url else "http://" + url
        self.client = ServerClient(self.url)
        self.meter = RateMeter(window_s)
        self.host, self.port = host_port(self.url)
        self.local = is_local(self.host)
        self.fixed_pid = pid
        self.pid: int | None = pid
        self.runner = runner
        self.gpu_every_s = gpu_every_s
        self._gpu_t = 0.0
        self._gpus: list[GpuView] | None = None
        self.has_nvidia = shutil.which("nvidia-smi") is not None
        self.groups = sibling_groups()
        self._gguf: dict[str, dict] = {}
        self._down_since: float | None = None
        self._slots_prev: tuple[float, dict] | None = None
        self.polls = 0
        psutil.cpu_percent(percpu=True)  # prime: the next call measures since now

    def _gguf_for(self, path: str | None) -> dict | None:
        """The GGUF header of the served model, read once in the background (reading a header
        with its vocabulary arrays takes seconds; /props fills the view meanwhile)."""
        if not path or not self.local:
            return None
        if path not in self._gguf:
            self._gguf[path] = None

            def read():
                try:
                    self._gguf[path] = gguf_summary(path)
                except Exception:  # unreadable or not a GGUF: /props still names the model
                    self._gguf[path] = {}

            threading.Thread(target=read, daemon=True, name="panel-gguf").start()
        return self._gguf[path]

    def _gpu(self) -> list[GpuView] | None:
        if not self.has_nvidia:
            return None
        now = time.time()
        if self._gpus is not None and now - self._gpu_t < self.gpu_every_s:
            return self._gpus
        self._gpu_t = now
        runner = self.runner
        if runner is None:
            from ..core.journal import Journal
            from ..core.runner import Runner

            runner = self.runner = Runner(journal=Journal(None), phase="panel")
        self._gpus = gather(runner, gpu.USAGE)
        # the panel runs for hours: keep only the recent journal entries in memory
        del runner.history[:-50]
        del runner.journal.entries[:-50]
        return self._gpus

    def collect(self) -> PanelState:
        self.polls += 1
        snap = self.client.poll()
        st = PanelState(self.url, snap.t, reachable=snap.reachable, error=snap.error,
                        health=snap.health, metrics=snap.metrics, metrics_note=snap.metrics_note,
                        groups=self.groups, polls=self.polls)
        st.cpu = psutil.cpu_percent(percpu=True)
        if not snap.reachable:
            if self._down_since is None:
                self._down_since = snap.t
            st.down_since = self._down_since
            self.meter.forget_baseline()
            if self.fixed_pid is None:
                self.pid = None
        else:
            self._down_since = None
            gg = self._gguf_for((snap.props or {}).get("model_path"))
            st.model = model_view(snap.props, snap.model_meta, gg)
            if snap.metrics == "on":
                try:
                    raw = parse_metrics(snap.metrics_text)
                except ValueError as e:
                    st.metrics, st.metrics_note = "error", f"unparsable /metrics: {e}"
                    raw = {}
                vals = canonical_metrics(raw)
                st.missing = missing_core_metrics(vals)
                upd = self.meter.update(Scrape(snap.t, vals))
                st.gen, st.prompt = upd.generation, upd.prompt
                st.processing = vals.get("requests_processing")
                st.deferred = vals.get("requests_deferred")
                st.tokens_total = vals.get("tokens_predicted_total")
                st.server_gauge_gen = vals.get("predicted_tokens_seconds")
            if snap.slots is not None:
                cur = slot_progress(snap.slots)
                if self._slots_prev is not None:
                    st.live = live_rate(self._slots_prev[1], cur, snap.t - self._slots_prev[0])
                self._slots_prev = (snap.t, cur)
            if self.local and self.pid is None:
                self.pid = find_listening_pid(self.port)
        st.gen_last, st.gen_last_t = self.meter.gen.last, self.meter.gen.last_t
        st.prompt_last = self.meter.prompt.last
        st.gen_avg = self.meter.cumulative("gen")
        st.prompt_avg = self.meter.cumulative("prompt")
        st.sparkline = self.meter.sparkline
        if self.pid is not None:
            st.process = read_process(self.pid, st.model.path)
            if st.process is None and self.fixed_pid is None:
                self.pid = None
        st.memory = memory_view(st.process)
        st.gpus = self._gpu()
        return st
