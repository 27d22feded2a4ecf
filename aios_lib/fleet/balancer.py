"""The load balancer in front of the replicas: HAProxy (Debian's package).

Why HAProxy and not nginx: the open-source nginx checks upstreams only passively (a server is
marked failed after real requests to it failed); active health checks are an nginx Plus feature.
HAProxy has, in its free version, everything the fleet needs:

* ``balance leastconn``: each request goes to the replica with the fewest requests in flight;
* ``option httpchk GET /health`` every ``inter`` (llama-server answers 200 when a model is loaded
  and 503 while loading), a server down after ``fall`` failed checks;
* ``maxconn`` per server = its llama-server slot count: never more requests in flight on a replica
  than it can decode at once; the rest wait in the backend's queue (``timeout queue``) for the first
  free slot on any replica, instead of piling up on one;
* ``retry-on conn-failure empty-response`` with ``option redispatch 1`` (every retry may go to
  another replica): a request whose connection to a dead replica fails is sent to another one (a
  response already streaming cannot be retried);
* passive checks as well (``observe layer4 error-limit 1 on-error mark-down``): the first refused
  connection marks a replica down, without waiting for the next health check. Without it a killed
  replica, having no connections left, is exactly what ``leastconn`` picks, and every request
  arriving before the next check spends its retries on it and gets a 503;
* a stats socket (``show stat``: sessions, queue, retries, redispatches, status per server) that the
  load test reads, and the replica's name in an ``X-Synapse-Replica`` response header.
"""
from __future__ import annotations

import csv
import io
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..measure.server import free_port


@dataclass
class Backend:
    name: str
    address: str
    port: int
    slots: int


def haproxy_config(backends: list[Backend], *, bind: str, port: int, stats_socket: str | Path,
                   check_interval_ms: int = 1000, fall: int = 2, rise: int = 1, queue_timeout_s: int = 120,
                   server_timeout_s: int = 300) -> str:
    """The HAProxy configuration (pure). One frontend on ``bind:port``, one backend, one server line
    per replica with ``maxconn`` = its slots."""
    if not backends:
        raise ValueError("a load balancer needs at least one replica")
    lines = [
        "global",
        "    maxconn 1024",
        f"    stats socket {stats_socket} mode 600 level admin",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        f"    timeout client {server_timeout_s}s",
        f"    timeout server {server_timeout_s}s",
        f"    timeout queue {queue_timeout_s}s",
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response",
        "",
        "frontend synapse",
        f"    bind {bind}:{port}",
        "    default_backend replicas",
        "",
        "backend replicas",
        "    balance leastconn",
        "    option httpchk GET /health",
        "    http-check expect status 200",
        "    http-response set-header X-Synapse-Replica %s",
        # active checks on /health, and passive ones: a refused connection marks the server down at
        # once (a dead replica has no connections, so leastconn would otherwise pick it first and
        # the retries would be spent on it until the next check)
        f"    default-server check inter {check_interval_ms}ms fall {fall} rise {rise} "
        "observe layer4 error-limit 1 on-error mark-down",
    ]
    for b in backends:
        lines.append(f"    server {b.name} {b.address}:{b.port} maxconn {b.slots}")
    return "\n".join(lines) + "\n"


def parse_stats(text: str) -> dict[str, dict]:
    """``show stat`` CSV as {server name: row} for the ``replicas`` backend's servers (and
    ``BACKEND``), numbers as ints. Pure."""
    text = text.lstrip("# ")
    rows = list(csv.DictReader(io.StringIO(text)))
    out = {}
    for r in rows:
        if r.get("pxname") != "replicas":
            continue
        row = {}
        for k, v in r.items():
            if k is None:
                continue
            row[k] = int(v) if v and v.lstrip("-").isdigit() else v
        out[r["svname"]] = row
    return out


class Balancer:
    """``with Balancer(runner, dir, backends) as lb:`` HAProxy on 127.0.0.1 at ``lb.url``."""

    def __init__(self, runner, d: str | Path, backends: list[Backend], *, check_interval_ms: int = 1000,
                 fall: int = 2, bind: str = "127.0.0.1", port: int | None = None):
        self.runner, self.dir, self.backends = runner, Path(d), backends
        self.port = port or free_port()
        self.bind = bind
        self.url = f"http://{bind}:{self.port}"
        self.socket = self.dir / "haproxy.sock"
        self.config = self.dir / "haproxy.cfg"
        self.check_interval_ms, self.fall = check_interval_ms, fall
        self.proc = None

    @property
    def planned(self) -> bool:
        return self.proc is None or self.proc.planned

    def start(self) -> "Balancer":
        r = self.runner
        text = haproxy_config(self.backends, bind=self.bind, port=self.port, stats_socket=self.socket,
                              check_interval_ms=self.check_interval_ms, fall=self.fall)
        r.write_file(self.config, text, note="the load balancer's configuration")
        r.probe(["haproxy", "-c", "-f", str(self.config)], quiet=True, note="HAProxy checks its configuration")
        self.proc = r.spawn(["haproxy", "-db", "-f", str(self.config)], kind="work",
                            note=f"HAProxy on {self.url}: leastconn over {len(self.backends)} replica(s)")
        if self.proc.planned:
            return self
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            if not self.proc.alive():
                res = self.proc.stop()
                raise RuntimeError(f"haproxy exited with {res.rc}: {(res.stderr or res.stdout).strip()[-600:]}")
            if self.socket.exists():
                try:
                    st = self.stats()
                    if all(st.get(b.name, {}).get("status", "").startswith("UP") for b in self.backends):
                        return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"HAProxy: not every replica UP after 20 s: {self.stats() if self.socket.exists() else '-'}")

    def stats(self) -> dict[str, dict]:
        """Per server: status, sessions now (scur) and in total (stot), queue, retries (wretr),
        redispatches (wredis), failed checks... from the stats socket."""
        if self.planned:
            return {}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        return parse_stats(b"".join(chunks).decode())

    def stop(self):
        out = self.proc.stop() if self.proc is not None else None
        # HAProxy leaves its stats socket behind; a socket in a run folder is no record (git cannot keep it)
        self.socket.unlink(missing_ok=True)
        return out

    def __enter__(self) -> "Balancer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
