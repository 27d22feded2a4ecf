"""A model too large for one host, split over several with llama.cpp's RPC backend.

llama.cpp's own README calls ``ggml-rpc-server`` "fragile and insecure: never run it on an open
network": it executes whatever graph a client sends and has no authentication. So Synapse

* builds it only as a variant of the build this machine verified (same CMake options and pinned
  patches, plus ``GGML_RPC=ON``; its own cache key) and verifies that build before any use;
* binds every rpc-server to the host's fleet address (never 0.0.0.0, never loopback only);
* loads an nftables table on the host that accepts the RPC port from the fleet's peers only and
  drops it from everyone else (:func:`nft_rules`), and proves it: a connection from an address
  outside the fleet must fail while a peer's succeeds (:func:`reachable`).

:func:`choose_layout` decides replicas or RPC from the model's size against each host's memory.
Across machines over CPU, RPC is slower than one machine whenever the model fits (every layer's
activations cross the network): replicas are the answer for throughput, RPC only for a model no
single host can hold.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass, field

from ..runtime import llama, verify

#: what the RPC variant adds to the build it is made like
RPC_OPTIONS = {"GGML_RPC": "ON"}
#: ggml-rpc-server on the other hosts; llama-server (--rpc) on the main host; llama-bench for the smoke run
RPC_TARGETS = ["llama-server", "ggml-rpc-server", "llama-bench"]
RPC_PORT = 50052


# ---- the build ------------------------------------------------------------------------------------
def rpc_build(run, like, model_path) -> "verify.WorkingBuild":
    """The RPC variant of ``like`` (a verified :class:`~aios_lib.runtime.llama.LlamaBuild`): the same
    CMake options and pinned patches plus ``GGML_RPC=ON``, cached under its own key (ccache makes
    the rebuild mostly hits), then verified on the real model like every build. Raises
    :class:`~aios_lib.runtime.verify.NoWorkingBuild` when the variant fails verification."""
    options = {**like.cmake_options, **RPC_OPTIONS}
    native = str(like.cmake_options.get("GGML_NATIVE", "OFF")).upper() == "ON"
    b = llama.build(run, label=f"{like.label}-rpc", native=native, cmake_options=options, targets=RPC_TARGETS,
                    patches=[p["name"] for p in like.patches])
    v = verify.verify(run, b, model_path)
    if not (v.ok or v.planned):
        raise verify.NoWorkingBuild(f"the RPC variant of the {like.label} build failed verification: "
                                    f"{verify._why(v)}")
    why = (f"the verified `{like.label}` build's options and patches plus GGML_RPC=ON"
           + ("" if v.planned else ", verified on the real model"))
    return verify.WorkingBuild(b, v, [verify.Attempt(b.to_dict(), v.to_dict(), why)], why)


# ---- replicas or RPC ------------------------------------------------------------------------------
#: what a loaded model needs beyond its file: KV cache, compute buffers, the server itself
RUNTIME_OVERHEAD = 0.20
#: what each host keeps for its operating system (the service's memory reserve is the default)
GIB = 2**30


@dataclass
class Layout:
    """How a model is served on a fleet: ``replicas`` (every host holds it), ``rpc`` (split over
    ``hosts``), or ``too-large`` (the whole fleet cannot hold it)."""

    mode: str
    model_bytes: int
    need_bytes: int
    usable: dict[str, int]
    hosts: list[str] = field(default_factory=list)
    why: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def _repr_markdown_(self) -> str:
        return f"**{self.mode}**: {self.why}"


def choose_layout(model_bytes: int, memory: dict[str, int], reserve: dict[str, int] | int,
                  overhead: float = RUNTIME_OVERHEAD) -> Layout:
    """Replicas when the model (plus ``overhead``) fits in every host's memory less its reserve;
    else RPC over the fewest hosts (largest first) whose usable memory together holds it; else
    too large. ``memory``: {host: bytes}. Pure: the reasons are generated from the numbers."""
    reserve_of = (lambda h: reserve[h]) if isinstance(reserve, dict) else (lambda h: reserve)
    usable = {h: max(0, int(m) - int(reserve_of(h))) for h, m in memory.items()}
    need = int(math.ceil(model_bytes * (1 + overhead)))
    g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
    fits = [h for h, u in usable.items() if u >= need]
    if usable and len(fits) == len(usable):
        return Layout("replicas", model_bytes, need, usable, sorted(usable),
                      f"the model needs {g(need)} (file {g(model_bytes)} + {overhead:.0%} for KV cache and buffers) "
                      f"and every host has at least {g(min(usable.values()))} usable: one replica per host behind "
                      "the load balancer serves the most requests (RPC would only add network hops)")
    if fits:
        return Layout("replicas", model_bytes, need, usable, sorted(fits),
                      f"the model needs {g(need)}; {len(fits)} of {len(usable)} hosts hold it "
                      f"({', '.join(sorted(fits))}): replicas on those, the others "
                      f"({', '.join(sorted(set(usable) - set(fits)))}) are too small to serve it")
    chosen, total = [], 0
    for h, u in sorted(usable.items(), key=lambda kv: (-kv[1], kv[0])):
        chosen.append(h)
        total += u
        if total >= need:
            return Layout("rpc", model_bytes, need, usable, chosen,
                          f"the model needs {g(need)} but the largest host has {g(max(usable.values()))} usable: "
                          f"split over {len(chosen)} hosts ({', '.join(chosen)}, {g(total)} together) with "
                          f"llama.cpp RPC; {chosen[0]} runs llama-server --rpc, the others rpc-server")
    return Layout("too-large", model_bytes, need, usable, [],
                  f"the model needs {g(need)} and the whole fleet has {g(sum(usable.values()))} usable: "
                  "choose a smaller quantisation or add hosts")


# ---- the firewall ---------------------------------------------------------------------------------
NFT_TABLE = "synapse_rpc"


def nft_rules(port: int, peers: list[str], table: str = NFT_TABLE) -> str:
    """An nftables table (inet family, its own table so nothing else is touched) that accepts the
    RPC port from the fleet's peer addresses only and drops it from everyone else, loopback
    included. ``nft -f`` loads it atomically; ``delete table`` removes it whole."""
    addrs = sorted({str(ipaddress.ip_address(p)) for p in peers}, key=lambda a: ipaddress.ip_address(a))
    if not addrs:
        raise ValueError("an RPC server needs at least one fleet peer allowed to reach it")
    v4 = [a for a in addrs if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addrs if ipaddress.ip_address(a).version == 6]
    lines = [f"table inet {table} {{", "  chain input {", "    type filter hook input priority 0; policy accept;"]
    if v4:
        lines.append(f"    ip saddr {{ {', '.join(v4)} }} tcp dport {port} accept")
    if v6:
        lines.append(f"    ip6 saddr {{ {', '.join(v6)} }} tcp dport {port} accept")
    lines += [f"    tcp dport {port} drop", "  }", "}"]
    return "\n".join(lines) + "\n"


def check_bind_address(host: str, fleet_addresses: list[str]) -> str:
    """The address an rpc-server may bind: one of the fleet's own, never a wildcard. Raises
    ValueError with the fix otherwise."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"rpc-server host {host!r} is not an IP address: bind it to the host's fleet address") from None
    if ip.is_unspecified:
        raise ValueError(f"rpc-server must never bind {host} (every interface): bind it to the host's fleet address")
    if str(ip) not in {str(ipaddress.ip_address(a)) for a in fleet_addresses}:
        raise ValueError(f"rpc-server address {host} is not one of the fleet's addresses "
                         f"({', '.join(fleet_addresses)}): bind it to the host's fleet address")
    return str(ip)


# ---- running it -----------------------------------------------------------------------------------
def rpc_server_argv(binary, address: str, port: int = RPC_PORT, threads: int = 1) -> list[str]:
    return [str(binary), "-H", address, "-p", str(port), "-t", str(threads)]


def parse_listening(ss_output: str) -> list[tuple[str, int]]:
    """``ss -Hltn`` output as [(address, port)] of listening TCP sockets. Pure."""
    out = []
    for line in ss_output.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        local = parts[3]
        addr, _, port = local.rpartition(":")
        if port.isdigit():
            out.append((addr.strip("[]"), int(port)))
    return out


def connect_argv(address: str, port: int, timeout_s: float = 2.0) -> list[str]:
    """A TCP connect attempt as a command (exit 0: connected), to run from inside a namespace."""
    code = ("import socket,sys\n"
            f"try:\n    socket.create_connection(({address!r}, {port}), timeout={timeout_s}).close()\n"
            "except OSError as e:\n    print(type(e).__name__, e); sys.exit(1)\n")
    return ["python3", "-c", code]


def reachable(runner, wrap, address: str, port: int, timeout_s: float = 2.0, note: str = "") -> dict:
    """Whether ``address:port`` accepts a TCP connection from where ``wrap`` runs a command."""
    res = runner.probe(wrap(connect_argv(address, port, timeout_s)), check=False, quiet=True,
                       timeout=timeout_s + 10, note=note or f"can this place reach {address}:{port}?")
    return {"reachable": None if res.planned else res.rc == 0, "detail": (res.stdout or res.stderr).strip()[-200:],
            "seconds": round(res.duration, 2), "command": res.cmdline}


def offload_layers(n_layer: int, usable: dict[str, int], main: str, remotes: list[str]) -> int:
    """How many of the model's layers go to the RPC servers (``-ngl``): in proportion to the
    usable memory of the remote hosts against the whole split. At least one layer stays local
    and one goes remote, so the split is real."""
    total = usable[main] + sum(usable[r] for r in remotes)
    share = sum(usable[r] for r in remotes) / total if total else 0.5
    return max(1, min(n_layer - 1, round(n_layer * share)))


def first_difference(a: str, b: str) -> int | None:
    """The first character index where two texts differ (None when equal). Pure."""
    if a == b:
        return None
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@dataclass
class RpcHost:
    """A host of the split: its name, fleet address, and ``wrap`` (argv -> argv as a process there)."""

    name: str
    address: str
    wrap: object = field(default=lambda a: a, repr=False)


def start_rpc_server(runner, host: RpcHost, binary, peers: list[str], port: int = RPC_PORT, threads: int = 1,
                     ready_timeout: float = 30):
    """Firewall first, then ``ggml-rpc-server`` bound to the host's fleet address; returns
    (process, listening sockets). The nftables table accepts ``port`` from ``peers`` only."""
    import time

    check_bind_address(host.address, [host.address, *peers])
    runner.change(host.wrap(["nft", "-f", "-"]), input=nft_rules(port, peers),
                  note=f"{host.name}: the RPC port {port} open to the fleet's peers only ({', '.join(peers)})")
    proc = runner.spawn(host.wrap(rpc_server_argv(binary, host.address, port, threads)),
                        note=f"{host.name}: ggml-rpc-server on {host.address}:{port} (fleet address only)")
    if proc.planned:
        return proc, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < ready_timeout:
        if not proc.alive():
            res = proc.stop()
            raise RuntimeError(f"ggml-rpc-server on {host.name} exited with {res.rc}: {(res.stderr or res.stdout)[-600:]}")
        ss = runner.probe(host.wrap(["ss", "-Hltn"]), quiet=True, check=False)
        socks = [s for s in parse_listening(ss.stdout) if s[1] == port]
        if socks:
            return proc, socks
        time.sleep(0.2)
    proc.stop()
    raise TimeoutError(f"ggml-rpc-server on {host.name} not listening on port {port} after {ready_timeout:.0f} s")


def remove_firewall(runner, host: RpcHost) -> None:
    runner.change(host.wrap(["nft", "delete", "table", "inet", NFT_TABLE]), check=False, quiet=True,
                  note=f"{host.name}: the RPC firewall table removed")


#: a prompt long enough to time prompt processing (about 200 tokens)
LONG_PROMPT = ("The history of the city of Paris begins with a small settlement on an island in the Seine. " * 12).strip()
GREEDY_PROMPT = "The capital of France is"


def _session(runner, replica, *, requests: int, n_predict: int, greedy_tokens: int) -> dict:
    from .replicas import one_completion

    replica.start(runner)
    try:
        greedy = one_completion(replica.url, GREEDY_PROMPT, greedy_tokens, seed=0)
        runs = [one_completion(replica.url, LONG_PROMPT, n_predict, seed=i) for i in range(requests)]
    finally:
        replica.stop()
    gen = sorted(r.server_tps for r in runs if r.server_tps)
    pp = sorted(r.server_prompt_tps for r in runs if r.server_prompt_tps)
    med = lambda xs: xs[len(xs) // 2] if xs else None  # noqa: E731
    return {"greedy_text": greedy.text, "greedy_ok": greedy.outcome == "ok", "gen_tps": med(gen), "prompt_tps": med(pp),
            "requests": [{"outcome": r.outcome, "gen_tps": r.server_tps, "prompt_tps": r.server_prompt_tps,
                          "error": r.error} for r in runs], "command": " ".join(replica.argv), "ready_s": replica.ready_s}


def split_vs_single(runner, build, model_path, n_layer: int, main: RpcHost, remotes: list[RpcHost],
                    usable: dict[str, int], *, rounds: int = 1, requests: int = 2, n_predict: int = 32,
                    greedy_tokens: int = 32, port: int = 8081, rpc_port: int = RPC_PORT, threads: int = 1,
                    extra: list[str] | None = None) -> dict:
    """The model served by ``main`` alone and split over ``main`` + ``remotes`` (RPC), in rounds
    (order alternating): the same greedy completion from both, and generation and prompt t/s as
    paired ratios split/single. ``extra`` flags go to both servers."""
    import random

    from ..measure import stats
    from .replicas import Replica, replica_argv

    peers = [main.address]
    servers = [start_rpc_server(runner, r, build.binary("ggml-rpc-server"), peers, rpc_port, threads) for r in remotes]
    ngl = offload_layers(n_layer, usable, main.name, [r.name for r in remotes])
    endpoints = ",".join(f"{r.address}:{rpc_port}" for r in remotes)
    common = list(extra or [])
    sides = {
        "single": Replica("single", main.address, replica_argv(build.binary("llama-server"), model_path, main.address,
                                                               port, threads=threads, slots=1, extra=common),
                          wrap=main.wrap, port=port, slots=1),
        "split": Replica("split", main.address, replica_argv(build.binary("llama-server"), model_path, main.address,
                                                             port, threads=threads, slots=1,
                                                             extra=[*common, "--rpc", endpoints, "-ngl", str(ngl)]),
                         wrap=main.wrap, port=port, slots=1),
    }
    sessions = []
    rng = random.Random(0)
    try:
        for rnd in range(rounds):
            order = ["single", "split"]
            rng.shuffle(order)
            for name in order:
                s = _session(runner, sides[name], requests=requests, n_predict=n_predict, greedy_tokens=greedy_tokens)
                sessions.append({"round": rnd, "side": name, **s})
    finally:
        for proc, _ in servers:
            proc.stop()
        for r in remotes:
            remove_firewall(runner, r)
    if runner.plan:
        return {"planned": True, "offloaded_layers": ngl}
    by = lambda side, key: [s[key] for s in sessions if s["side"] == side]  # noqa: E731
    ref, split = by("single", "greedy_text"), by("split", "greedy_text")
    same = bool(ref) and all(t == ref[0] for t in ref + split)
    diff = None if same else first_difference(ref[0] if ref else "", split[0] if split else "")
    return {
        "offloaded_layers": ngl, "n_layer": n_layer, "rpc_servers": endpoints,
        "listening": {r.name: [f"{a}:{p}" for a, p in socks] for r, (_, socks) in zip(remotes, servers)},
        "greedy": {"same": same, "reference": ref[0] if ref else None, "split": split[0] if split else None,
                   "first_difference": diff, "tokens": greedy_tokens,
                   "why": "" if same else "the split runs the remote layers on the rpc-server's CPU backend without "
                                          "the main host's extra buffer types (repacked/AMX weights): different "
                                          "kernels round differently, and greedy decoding follows the first change"},
        "gen_ratio": stats.paired_ratio(by("single", "gen_tps"), by("split", "gen_tps"), "one host", "RPC split").as_dict(),
        "prompt_ratio": stats.paired_ratio(by("single", "prompt_tps"), by("split", "prompt_tps"), "one host",
                                           "RPC split").as_dict(),
        "sessions": sessions,
    }
