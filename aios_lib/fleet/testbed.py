"""Fleet hosts that are real separate systems on this machine (for the tests and the benchmark).

Each host is

* its own **network namespace** with one address on a private subnet, joined to this machine by a
  veth pair on a bridge (the controller's address is the bridge's): nothing is routed anywhere
  else, and before any traffic :func:`check_local_route` proves the kernel sends the fleet's
  addresses to the bridge and nowhere else;
* its own **root**: an overlay over this machine's ``/`` whose upper layer is a tmpfs inside the
  host's own mount namespace. The host sees the same installed packages (Python, sshd, the
  llama.cpp cache) like a cloned machine, but what it writes (the runbook Ansible installs, its
  records, /etc/ssh, /root/.ssh) stays in the host and vanishes with it. Chosen over the Phase 2
  image with systemd-nspawn because that needs the image built first (minutes, a loop device) and
  an init per host; an overlay costs one mount and shares the page cache, so two hosts fit on 2 cores.
* its own **sshd** (its own host key, root login by the generated key only), listening on the
  host's address only; Ansible connects to it over real SSH with host keys checked;
* its own **cpuset** (cgroup v1): one CPU each here, so replicas do not share cores.

:meth:`Testbed.down` removes everything, also after a failure, and :meth:`Testbed.up` first
removes what an interrupted earlier run left behind. All commands go through the runner.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.runner import Background

DATA = Path(__file__).resolve().parent / "data"
BOOT = DATA / "host-boot.sh"
ENTER = DATA / "enter-host.sh"
SUBNET = "10.231.0.0/24"
BRIDGE = "synfleet0"
PREFIX = "synfleet"
CPUSET_ROOT = Path("/sys/fs/cgroup/cpuset")
#: never more hosts than this on one machine (each is a tmpfs, an sshd and a namespace)
MAX_HOSTS = 8


@dataclass
class LabHost:
    name: str
    address: str
    cpus: list[int]
    dir: Path  # on the controller: keys and configuration for this host
    ssh: bool = True  # False: a bare namespace (an address and nothing else, e.g. an outsider)
    sshd: Background | None = None

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def veth(self) -> str:
        return f"sf-{self.name}"[:15]

    @property
    def cgroup(self) -> Path:
        return CPUSET_ROOT / f"{PREFIX}-{self.name}"

    @property
    def pid(self) -> int | None:
        return self.sshd.pid if self.sshd is not None else None

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` as a process of this host (its cpuset, namespaces and root)."""
        if not self.ssh:
            return ["ip", "netns", "exec", self.netns, *argv]
        return ["sh", str(ENTER), str(self.cgroup), str(self.pid), *argv]


def sshd_config(address: str) -> str:
    return "\n".join([
        f"ListenAddress {address}",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PidFile /run/sshd.pid",
        "MaxStartups 30:30:60",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ])


def check_local_route(runner, address: str) -> None:
    """Refuse to go on unless the kernel routes ``address`` to the fleet bridge (traffic to a fleet
    address must never leave this machine, even when a step of the setup failed)."""
    res = runner.probe(["ip", "-o", "route", "get", address], check=False, quiet=True)
    if res.planned or runner.plan:
        return
    if f" dev {BRIDGE} " not in f" {res.stdout} ":
        raise RuntimeError(f"{address} is not routed to the fleet bridge {BRIDGE} ({res.stdout.strip() or res.stderr.strip()}): "
                           "refusing to send traffic that could leave this machine")


class Testbed:
    """``with Testbed(runner, dir, {"h1": [0], "h2": [1]}) as tb:`` hosts h1 and h2, one CPU each."""

    def __init__(self, runner, base: str | Path, hosts: dict[str, list[int]], outsiders: list[str] = (),
                 subnet: str = SUBNET):
        if len(hosts) + len(outsiders) > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} test hosts on one machine")
        self.runner = runner
        self.dir = Path(base)
        net = ipaddress.ip_network(subnet)
        addrs = list(net.hosts())
        self.controller = str(addrs[0])
        self.prefix = net.prefixlen
        self.hosts: dict[str, LabHost] = {}
        for i, (name, cpus) in enumerate(hosts.items()):
            self.hosts[name] = LabHost(name, str(addrs[10 + i]), list(cpus), self.dir / name)
        for i, name in enumerate(outsiders):
            self.hosts[name] = LabHost(name, str(addrs[200 + i]), [], self.dir / name, ssh=False)
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"

    # ---- up ------------------------------------------------------------------------------------------
    def up(self) -> "Testbed":
        r = self.runner
        self.down(quiet=True)  # what an interrupted earlier run left behind
        r.change(["mkdir", "-p", str(self.dir)], quiet=True)
        r.change(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "synapse-fleet-controller", "-f", str(self.key)],
                 note="the controller's key (Ansible logs in with it)")
        r.change(["ip", "link", "add", BRIDGE, "type", "bridge"], note="the fleet's private network")
        r.change(["ip", "addr", "add", f"{self.controller}/{self.prefix}", "dev", BRIDGE])
        r.change(["ip", "link", "set", BRIDGE, "up"])
        known = []
        for h in self.hosts.values():
            self._network(h)
            check_local_route(r, h.address)
            if h.ssh:
                known.append(self._host_files(h))
        if not r.plan:
            r.write_file(self.known_hosts, "".join(known), mode=0o644, note="the hosts' keys: Ansible checks them")
        for h in self.hosts.values():
            if h.ssh:
                self._boot(h)
        for h in self.hosts.values():
            if h.ssh:
                self._wait_ssh(h)
        return self

    def _network(self, h: LabHost) -> None:
        r = self.runner
        r.change(["ip", "netns", "add", h.netns], note=f"test host {h.name}: its own network")
        r.change(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns])
        r.change(["ip", "link", "set", h.veth, "master", BRIDGE, "up"])
        r.change(["ip", "-n", h.netns, "addr", "add", f"{h.address}/{self.prefix}", "dev", "eth0"])
        r.change(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
        r.change(["ip", "-n", h.netns, "link", "set", "lo", "up"])

    def _host_files(self, h: LabHost) -> str:
        r = self.runner
        r.change(["mkdir", "-p", str(h.dir)], quiet=True)
        r.change(["mkdir", str(h.cgroup)], note=f"test host {h.name}: its own CPUs")
        r.change(["tee", str(h.cgroup / "cpuset.cpus")], input=",".join(map(str, h.cpus)) + "\n", quiet=True)
        r.change(["tee", str(h.cgroup / "cpuset.mems")], input="0\n", quiet=True)
        key = h.dir / "ssh_host_ed25519_key"
        r.change(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f", str(key)],
                 note=f"test host {h.name}: its own host key")
        r.change(["cp", f"{self.key}.pub", str(h.dir / "authorized_keys")], quiet=True)
        r.write_file(h.dir / "sshd_config", sshd_config(h.address), note=f"sshd of {h.name}: its address only")
        if r.plan:
            return ""
        return f"{h.address} {Path(f'{key}.pub').read_text().split(' ')[0]} {Path(f'{key}.pub').read_text().split(' ')[1]}\n"

    def _boot(self, h: LabHost) -> None:
        h.sshd = self.runner.spawn(["sh", str(BOOT), h.name, h.netns, str(h.cgroup), str(h.dir)], kind="change",
                                   note=f"test host {h.name} ({h.address}, CPUs {h.cpus}): its root and sshd")

    def _wait_ssh(self, h: LabHost, timeout: float = 30) -> None:
        if h.sshd is None or h.sshd.planned:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not h.sshd.alive():
                res = h.sshd.stop()
                raise RuntimeError(f"test host {h.name} stopped while booting (rc {res.rc}): "
                                   f"{(res.stderr or res.stdout).strip()[-800:]}")
            try:
                with socket.create_connection((h.address, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"test host {h.name}: sshd not answering on {h.address}:22 after {timeout:.0f} s")

    # ---- use ----------------------------------------------------------------------------------------
    def stop_sshd(self, name: str) -> None:
        """Stop one host's sshd (and with it the host's root): the host becomes unreachable."""
        h = self.hosts[name]
        if h.sshd is not None:
            h.sshd.stop()

    def sshd_log(self, name: str) -> str:
        h = self.hosts[name]
        return h.sshd.output() if h.sshd is not None and not h.sshd.planned else ""

    def inventory(self, path: str | Path, synapse: dict | None = None, host_vars: dict | None = None,
                  python: str | None = None) -> Path:
        """An Ansible inventory of the SSH hosts (``synapse`` for every host, ``host_vars`` per host)."""
        import sys

        host_vars = host_vars or {}
        all_vars = {"ansible_user": "root", "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    # the hosts' roots are overlays of this machine's: its virtualenv is there already
                    "synapse_python": python or sys.executable}
        if synapse:
            all_vars["synapse"] = synapse
        hosts = {h.name: {"ansible_host": h.address, **host_vars.get(h.name, {})}
                 for h in self.hosts.values() if h.ssh}
        text = yaml.safe_dump({"all": {"vars": all_vars, "hosts": hosts}}, sort_keys=False)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("# test hosts made by aios_lib.fleet.testbed (network namespaces on this machine)\n" + text)
        return p

    # ---- down -----------------------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> list[str]:
        """Remove every host, the bridge and the files; each step tolerates what is already gone.
        Returns what could not be removed (empty when all went)."""
        r = self.runner
        left = []
        for h in self.hosts.values():
            # every process of a host is in its cpuset (sshd, its sessions, what Ansible and the tests
            # started there): an SSH session the controller keeps open (ControlPersist) would keep the
            # host's namespaces alive (and sshd's output pipes open) after sshd stopped, so they all
            # go first, while the network is up
            if h.ssh and not r.plan:
                self._kill_all(h)
            if h.sshd is not None:
                h.sshd.stop(timeout=5)
                h.sshd = None
        for h in self.hosts.values():
            r.change(["ip", "netns", "del", h.netns], check=False, quiet=True)
            if h.ssh and h.cgroup.exists():
                res = None
                for _ in range(20):  # a process of the host may take a moment to exit
                    res = r.change(["rmdir", str(h.cgroup)], check=False, quiet=True)
                    if res.planned or res.rc == 0:
                        break
                    time.sleep(0.25)
                if res is not None and res.rc not in (0, None):
                    left.append(str(h.cgroup))
        r.change(["ip", "link", "del", BRIDGE], check=False, quiet=True)
        r.change(["rm", "-rf", str(self.dir)], check=False, quiet=True)
        if not r.plan:
            names = r.probe(["ip", "netns", "list"], check=False, quiet=True).stdout
            left += [h.netns for h in self.hosts.values() if h.netns in names.split()]
        return left

    def _kill_all(self, h: LabHost, grace: float = 2, timeout: float = 10) -> None:
        """SIGTERM every process in the host's cpuset, SIGKILL what is still there after ``grace``
        seconds, until none is left (or ``timeout``)."""
        procs = h.cgroup / "cgroup.procs"
        t0 = time.monotonic()
        termed = False
        while procs.exists() and time.monotonic() - t0 < timeout:
            pids = procs.read_text().split()
            if not pids:
                return
            if not termed or time.monotonic() - t0 >= grace:
                sig = "-KILL" if termed else "-TERM"
                self.runner.change(["kill", sig, *pids], check=False, quiet=True,
                                   note=f"test host {h.name}: its processes ({sig[1:]})")
                termed = True
            time.sleep(0.1)

    def __enter__(self) -> "Testbed":
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()
