"""The playbook every fleet host runs, from one list of steps.

:data:`STEPS` is the runbook on a host: install the runbook, its parameter file, its dependencies,
``aios run`` (papermill) there, and, whatever happened, pack and fetch the run folder. The same
list renders the Ansible playbook (:func:`playbook_yaml`) and, in plan mode, the commands each
host would run (:func:`host_commands`, with Jinja, the template language Ansible evaluates the
playbook's expressions in), so the plan cannot drift from what runs.

:func:`host_outcomes` reads the JSON lines the ``synapse_events`` callback plugin writes while the
playbook runs: how each host's steps ended, the first failure named.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

#: the callback plugin's folder (ansible_plugins/synapse_events.py)
PLUGIN_DIR = Path(__file__).resolve().parent / "ansible_plugins"
#: what the runbook needs on a host (records, virtualenvs and caches stay behind)
RUNBOOK_FILES = ["aios_lib", "notebooks", "parameters", "scripts", "pyproject.toml", "Makefile", "README.md"]

#: play variables: every path on the host, from the host's variables (inventory) and the fleet run's
PLAY_VARS = {
    "synapse_home": "{{ synapse_dir | default('/opt/synapse') }}",
    "synapse_py": "{{ synapse_python | default(synapse_home ~ '/.venv/bin/python') }}",
    "synapse_outputs": "{{ synapse_home }}/outputs-fleet/{{ fleet_id }}",
    "synapse_params": "parameters/fleet/{{ inventory_hostname }}.yaml",
    "synapse_record_tar": "/tmp/synapse-record-{{ fleet_id }}.tar.gz",
}


@dataclass(frozen=True)
class Step:
    """One task of the playbook: an Ansible module with its arguments, and ``shown``: the commands
    (argv templates; ``{{ target }}`` is user@address) it amounts to, for plan mode and the reader."""

    name: str
    module: str
    args: dict
    shown: list[list[str]]
    when: str | None = None
    env: dict = field(default_factory=dict)
    always: bool = False  # runs even after a failed step (the record is fetched whatever happened)


RUN_ENV = {"AIOS_ROOT": "{{ synapse_home }}", "AIOS_OUTPUTS": "{{ synapse_outputs }}",
           # the runbook just installed wins over any other copy the interpreter may have
           "PYTHONPATH": "{{ synapse_home }}"}
SSH = ["ssh", "{{ target }}"]
AIOS_RUN = ["{{ synapse_py }}", "-m", "aios_lib.cli", "run", "--params", "{{ synapse_params }}", "--label", "fleet",
            "--quiet"]
PACK = ["tar", "-czf", "{{ synapse_record_tar }}", "-C", "{{ synapse_outputs }}", "{{ inventory_hostname }}"]
HOST_PARAMS = "{{ fleet_dir }}/params/{{ inventory_hostname }}.yaml"
FETCHED = "{{ fleet_dir }}/fetched/{{ inventory_hostname }}.tar.gz"

STEPS = [
    Step("the runbook's folder", "ansible.builtin.file",
         {"path": "{{ synapse_home }}/parameters/fleet", "state": "directory"},
         [[*SSH, "mkdir", "-p", "{{ synapse_home }}/parameters/fleet"]]),
    Step("the runbook (this checkout's files)", "ansible.builtin.unarchive",
         {"src": "{{ runbook }}", "dest": "{{ synapse_home }}"},
         [["scp", "{{ runbook }}", "{{ target }}:/tmp/synapse-runbook.tar.gz"],
          [*SSH, "tar", "-xzf", "/tmp/synapse-runbook.tar.gz", "-C", "{{ synapse_home }}"]]),
    Step("this host's parameter file", "ansible.builtin.copy",
         {"src": HOST_PARAMS, "dest": "{{ synapse_home }}/{{ synapse_params }}", "mode": "0644"},
         [["scp", HOST_PARAMS, "{{ target }}:{{ synapse_home }}/{{ synapse_params }}"]]),
    Step("Synapse's dependencies (scripts/setup.sh)", "ansible.builtin.command",
         {"argv": ["bash", "scripts/setup.sh", ".venv"], "chdir": "{{ synapse_home }}"},
         [[*SSH, "cd", "{{ synapse_home }}", "&&", "bash", "scripts/setup.sh", ".venv"]],
         when="synapse_python is not defined"),
    Step("aios run (papermill, this host's phases)", "ansible.builtin.command",
         {"argv": AIOS_RUN, "chdir": "{{ synapse_home }}"},
         [[*SSH, "cd", "{{ synapse_home }}", "&&", "env", *(f"{k}={v}" for k, v in RUN_ENV.items()), *AIOS_RUN]],
         env=RUN_ENV),
    Step("pack the run record", "ansible.builtin.command", {"argv": PACK}, [[*SSH, *PACK]], always=True),
    Step("fetch the run record", "ansible.builtin.fetch",
         {"src": "{{ synapse_record_tar }}", "dest": FETCHED, "flat": True},
         [["scp", "{{ target }}:{{ synapse_record_tar }}", FETCHED]], always=True),
]


def _task(step: Step) -> dict:
    t: dict = {"name": step.name, step.module: dict(step.args)}
    if step.when:
        t["when"] = step.when
    if step.env:
        t["environment"] = dict(step.env)
    return t


def playbook(steps: list[Step] = STEPS) -> list[dict]:
    """The playbook as data: one play over the inventory's hosts; the steps that must run whatever
    happened sit in the block's ``always``, so a failed run still has its partial record fetched."""
    main = [_task(s) for s in steps if not s.always]
    always = [_task(s) for s in steps if s.always]
    return [{"name": "Synapse runbook on every host", "hosts": "all", "gather_facts": False,
             "vars": dict(PLAY_VARS),
             "tasks": [{"name": "the runbook, run and recorded", "block": main, "always": always}]}]


def playbook_yaml(steps: list[Step] = STEPS) -> str:
    head = "# Rendered by aios_lib.fleet.playbook from its STEPS (plan mode lists the same steps per host).\n"
    return head + yaml.safe_dump(playbook(steps), sort_keys=False, width=120)


def ansible_cfg(forks: int = 10) -> str:
    """The configuration ansible-playbook runs with (ANSIBLE_CONFIG): the events plugin, host keys
    checked, pipelining and one SSH connection per host kept open for the run."""
    return "\n".join([
        "[defaults]",
        f"callback_plugins = {PLUGIN_DIR}",
        "callbacks_enabled = synapse_events",
        "host_key_checking = True",
        f"forks = {forks}",
        "timeout = 15",
        "interpreter_python = auto_silent",
        "retry_files_enabled = False",
        "",
        "[ssh_connection]",
        "pipelining = True",
        "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes",
        "",
    ])


# ---- plan mode: the commands each host would run ----------------------------------------------------
def resolve(template: str, variables: dict) -> str:
    """A playbook expression evaluated as Ansible would (Jinja2, undefined variables an error)."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(str(template)).render(**variables)


def play_variables(host_vars: dict, name: str, extra: dict) -> dict:
    """The variables a host's tasks see: its inventory variables, the fleet run's extra variables
    and the play variables, each evaluated in order (later ones use earlier ones)."""
    v = {**host_vars, "inventory_hostname": name, **extra}
    for k, t in PLAY_VARS.items():
        v[k] = resolve(t, v)
    return v


def _when(expr: str, variables: dict) -> bool:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)
    return bool(env.compile_expression(expr)(**variables))


@dataclass
class HostCommand:
    host: str
    step: str
    argv: list[str]
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {"host": self.host, "step": self.step, "argv": self.argv, "skipped": self.skipped}


def host_commands(name: str, host_vars: dict, extra: dict, steps: list[Step] = STEPS) -> list[HostCommand]:
    """What the playbook does on host ``name``: each step as the commands it amounts to there
    (``ssh user@address ...`` on the host, ``scp`` for copies), resolved from the host's variables.
    A step whose ``when`` is false for this host is listed as skipped, with the reason."""
    v = play_variables(host_vars, name, extra)
    v["target"] = f"{host_vars.get('ansible_user', 'root')}@{host_vars.get('ansible_host', name)}"
    out = []
    for s in steps:
        skipped = None if not s.when or _when(s.when, v) else f"when: {s.when} (false for this host)"
        for argv in s.shown:
            out.append(HostCommand(name, s.name, [resolve(a, v) for a in argv], skipped))
    return out


# ---- how each host's steps ended ---------------------------------------------------------------------
def read_events(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def host_outcomes(events: list[dict], hosts: list[str]) -> dict[str, dict]:
    """Per host: ``status`` (ok | failed | unreachable | not reached), the steps in order with their
    status, and the first failure (step, rc and the last lines of its output). Pure."""
    out: dict[str, dict] = {h: {"status": "not reached", "steps": [], "failed_step": None, "error": None}
                            for h in hosts}
    for e in events:
        h = e.get("host")
        if h not in out:
            continue
        o = out[h]
        o["steps"].append({"step": e.get("task"), "status": e.get("status"), "rc": e.get("rc"), "delta": e.get("delta")})
        st = e.get("status")
        if st in ("failed", "unreachable") and not e.get("ignored"):
            if o["failed_step"] is None:
                o["failed_step"] = e.get("task")
                tail = "\n".join((e.get("stderr") or e.get("stdout") or e.get("msg") or "").strip().splitlines()[-6:])
                o["error"] = (f"{e.get('task')}: {st}" + (f" (rc {e['rc']})" if e.get("rc") is not None else "")
                              + (f": {tail}" if tail else ""))
            o["status"] = "unreachable" if st == "unreachable" and o["status"] != "failed" else "failed"
        elif o["status"] == "not reached":
            o["status"] = "ok"
    return out
