"""``aios fleet run/plan --inventory FILE``: the runbook on every host of an inventory.

1. The inventory is read and every host's parameter file rendered and validated
   (:mod:`aios_lib.fleet.inventory`) before anything runs; Ansible's own reading of the file
   (``ansible-inventory --list``, local) must name the same hosts.
2. The fleet record ``outputs/fleet/<fleet-id>/`` gets the parameter files, the playbook, the
   Ansible configuration and, per host, the commands the playbook amounts to there.
3. Plan mode stops here: those commands are journaled as planned, none runs, no host is contacted.
4. A run: ``ansible-playbook`` installs the runbook on each host, runs ``aios run`` (papermill)
   there and fetches the host's run folder whatever happened; a failing host does not stop the
   others. Each fetched folder is unpacked into ``outputs/<host>/<run-id>/``.
5. ``fleet.json`` names each host's outcome: ok, failed (which step, why) or unreachable.
"""
from __future__ import annotations

import json
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.journal import Journal
from ..core.paths import outputs_dir, project_root
from ..core.records import new_run_id, read_json, write_json
from ..core.runner import Runner
from . import playbook as pb
from .inventory import Inventory, InventoryError, load_inventory, parameter_file_text


@dataclass
class HostOutcome:
    name: str
    address: str
    status: str  # ok | failed | unreachable | not reached | planned
    error: str | None = None
    failed_step: str | None = None
    run_id: str | None = None
    record: str | None = None  # outputs/<host>/<run-id> on the controller
    phases: list[dict] = field(default_factory=list)  # the host's own run.json phases
    steps: list[dict] = field(default_factory=list)
    commands: list[dict] = field(default_factory=list)


@dataclass
class FleetRun:
    id: str
    dir: Path
    plan: bool
    inventory: str
    hosts: list[HostOutcome]
    seconds: float = 0.0
    ansible_rc: int | None = None

    @property
    def ok(self) -> bool:
        return all(h.status in ("ok", "planned") for h in self.hosts)

    @property
    def failed(self) -> list[HostOutcome]:
        return [h for h in self.hosts if h.status not in ("ok", "planned")]

    def to_dict(self) -> dict:
        return {"id": self.id, "plan": self.plan, "inventory": self.inventory, "ok": self.ok,
                "seconds": self.seconds, "ansible_rc": self.ansible_rc,
                "hosts": [asdict(h) for h in self.hosts]}

    def lines(self) -> list[str]:
        out = []
        for h in self.hosts:
            where = f" -> {h.record}" if h.record else ""
            out.append(f"{h.name} ({h.address}): {h.status}{where}" + (f"\n   {h.error}" if h.error else ""))
        return out


def fleet_dir(fleet_id: str) -> Path:
    d = outputs_dir() / "fleet" / fleet_id
    d.mkdir(parents=True, exist_ok=True)
    return d


def _tool(name: str) -> list[str]:
    """An Ansible command of this interpreter's environment (the virtualenv), else from PATH, as
    the start of an argv. Ansible refuses a locale that is not UTF-8 and the runner runs every
    command with LC_ALL=C (parsable output), so the command runs under ``env LC_ALL=C.UTF-8``
    (glibc's built-in UTF-8 locale: present on every Debian)."""
    p = Path(sys.executable).parent / name
    return ["env", "LC_ALL=C.UTF-8", str(p) if p.exists() else name]


def ansible_env(d: Path) -> dict:
    return {"ANSIBLE_CONFIG": str(d / "ansible.cfg"), "SYNAPSE_EVENTS": str(d / "events.jsonl"),
            "ANSIBLE_LOCAL_TEMP": str(d / ".ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}


def prepare(inv: Inventory, d: Path, fleet_id: str) -> dict:
    """The fleet record's files (parameter files, playbook, configuration); returns the extra
    variables the playbook runs with."""
    (d / "params").mkdir(parents=True, exist_ok=True)
    (d / "fetched").mkdir(parents=True, exist_ok=True)
    for h in inv.hosts:
        (d / "params" / f"{h.name}.yaml").write_text(parameter_file_text(h))
    (d / "playbook.yml").write_text(pb.playbook_yaml())
    (d / "ansible.cfg").write_text(pb.ansible_cfg(forks=max(5, len(inv.hosts))))
    extra = {"fleet_id": fleet_id, "fleet_dir": str(d), "runbook": str(d / "synapse-runbook.tar.gz")}
    (d / "extra-vars.json").write_text(json.dumps(extra, indent=2))
    return extra


def check_ansible_reads_the_same(runner: Runner, inv: Inventory, d: Path) -> None:
    """Ansible's own reading of the inventory (local, contacts no host) names the same hosts."""
    res = runner.probe([*_tool("ansible-inventory"), "-i", str(inv.path), "--list"], env=ansible_env(d),
                       check=False, quiet=True, note="Ansible's reading of the inventory (no host contacted)")
    if res.rc != 0:
        raise InventoryError([f"{inv.path}: ansible-inventory cannot read it: "
                              f"{(res.stderr or res.stdout).strip().splitlines()[-1:] or ['(no output)']}"])
    data = json.loads(res.stdout)
    seen = set(data.get("_meta", {}).get("hostvars", {}))
    seen |= {h for g, v in data.items() if g != "_meta" and isinstance(v, dict) for h in v.get("hosts", [])}
    if seen != set(inv.names):
        raise InventoryError([f"{inv.path}: Ansible reads hosts {sorted(seen)} but Synapse reads {inv.names}: "
                              "use plain YAML (all: hosts/children/vars) without host ranges or plugins"])


def pack_runbook(runner: Runner, dest: Path) -> None:
    """This checkout's runbook files as the tarball the playbook installs on every host."""
    root = project_root()
    present = [f for f in pb.RUNBOOK_FILES if (root / f).exists()]
    runner.work(["tar", "-czf", str(dest), "--exclude=__pycache__", "--exclude=*.pyc", "-C", str(root), *present],
                note="the runbook every host gets")


def _unpack(runner: Runner, name: str, tar: Path) -> tuple[str | None, Path | None]:
    """The fetched record into outputs/<host>/<run-id>/; (run id, folder)."""
    try:
        with tarfile.open(tar) as t:
            names = t.getnames()
    except (OSError, tarfile.TarError):
        return None, None
    ids = sorted({n.split("/")[1] for n in names if n.startswith(f"{name}/") and n.count("/") >= 1 and n.split("/")[1]})
    bad = [n for n in names if not n.startswith(f"{name}/") and n != name or ".." in n.split("/")]
    if bad or not ids:
        return None, None
    runner.work(["tar", "-xzf", str(tar), "-C", str(outputs_dir())], note=f"{name}'s run record into outputs/")
    return ids[-1], outputs_dir() / name / ids[-1]


def run_fleet(inventory: str | Path, plan: bool = False, timeout: float = 6 * 3600, quiet: bool = False) -> FleetRun:
    """Run (or plan) the runbook on every host of ``inventory``; the fleet record says how each ended."""
    inv = load_inventory(inventory)  # every host validated before anything runs
    fleet_id = new_run_id(plan, "fleet")
    d = fleet_dir(fleet_id)
    runner = Runner(journal=Journal(d / "commands.jsonl"), plan=plan, phase="fleet")
    t0 = time.time()
    extra = prepare(inv, d, fleet_id)
    check_ansible_reads_the_same(runner, inv, d)
    outcomes = []
    for h in inv.hosts:
        cmds = pb.host_commands(h.name, h.vars, extra)
        outcomes.append(HostOutcome(h.name, h.address, "planned" if plan else "not reached",
                                    commands=[c.to_dict() for c in cmds]))
    meta = {"id": fleet_id, "plan": plan, "inventory": str(inv.path), "hosts": [h.to_dict() for h in inv.hosts],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(d / "fleet.json", meta)
    pack_runbook(runner, Path(extra["runbook"]))
    argv = [*_tool("ansible-playbook"), "-i", str(inv.path), str(d / "playbook.yml"), "-e", f"@{d / 'extra-vars.json'}"]
    if plan:
        runner.probe([*_tool("ansible-playbook"), "-i", str(inv.path), str(d / "playbook.yml"), "--syntax-check",
                      "-e", f"@{d / 'extra-vars.json'}"], env=ansible_env(d), quiet=True,
                     note="the playbook parses (no host contacted)")
        for o in outcomes:
            for c in o.commands:
                if c["skipped"]:
                    continue
                runner.change(c["argv"], note=f"host {o.name}: {c['step']} (run by ansible-playbook)", quiet=quiet)
        runner.work(argv, env=ansible_env(d), note="the playbook on every host", quiet=quiet)
    else:
        res = runner.work(argv, env=ansible_env(d), check=False, timeout=timeout,
                          note="the playbook on every host (a failing host does not stop the others)", quiet=quiet)
        fr_rc = res.rc
        results = pb.host_outcomes(pb.read_events(d / "events.jsonl"), inv.names)
        for o in outcomes:
            r = results[o.name]
            o.status, o.error, o.failed_step, o.steps = r["status"], r["error"], r["failed_step"], r["steps"]
            tar = d / "fetched" / f"{o.name}.tar.gz"
            if tar.exists():
                o.run_id, folder = _unpack(runner, o.name, tar)
                if folder is not None:
                    o.record = str(folder)
                    host_run = read_json(folder / "run.json")
                    o.phases = host_run.get("phases", [])
                    if o.status == "ok" and host_run.get("ok") is False:
                        o.status = "failed"
                        bad = next((p for p in o.phases if p.get("status") != "ok"), {})
                        o.error = f"aios run on the host: phase {bad.get('phase')} {bad.get('status')}: {bad.get('error')}"
            if o.status == "ok" and o.record is None:
                o.status, o.error = "failed", "the playbook ended but no run record came back"
        meta["ansible_rc"] = fr_rc
    fr = FleetRun(fleet_id, d, plan, str(inv.path), outcomes, round(time.time() - t0, 1), meta.get("ansible_rc"))
    meta.update(fr.to_dict())
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(d / "fleet.json", meta)
    return fr


def load_fleet(d: str | Path) -> dict:
    return read_json(Path(d) / "fleet.json")
