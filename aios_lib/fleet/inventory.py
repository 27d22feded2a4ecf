"""The fleet's inventory: an Ansible YAML inventory whose ``synapse`` variables are parameter files.

Ansible reads the same file to connect (``ansible_host``, ``ansible_user``, keys, ...). Synapse
reads the ``synapse`` variable at every level and merges it key by key, deeper levels winning:

    synapse_params_file (a parameter file, optional)  <  all.vars.synapse
      <  each group's vars.synapse (parents before children, then by name)  <  the host's synapse

``machine.name`` defaults to the inventory name of the host, so its record lands in
``outputs/<host>/<run-id>/``. Each host's result is validated by the parameter model
(:func:`aios_lib.params.parse_params`) before anything runs; a bad value is one line naming the
inventory, the host, the key and the fix (:class:`InventoryError`, a ``ParamsError``).

Other host variables Synapse uses (all optional):
``synapse_dir`` (where the runbook is installed, default ``/opt/synapse``), ``synapse_python`` (an
interpreter on the host that already has Synapse's dependencies; without it the playbook runs
``scripts/setup.sh`` there), ``synapse_address`` (the host's fleet address for the load balancer and
RPC; default ``ansible_host``).
"""
from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..params import Params, ParamsError, parse_params, read_yaml

DEFAULT_DIR = "/opt/synapse"
#: host variables Synapse reads (Ansible's own ``ansible_*`` pass through untouched)
SYNAPSE_VARS = {"synapse", "synapse_params_file", "synapse_dir", "synapse_python", "synapse_address"}
#: a host name becomes a folder under outputs/ and a file name: keep it plain
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED = {"fleet", "index.html", "notebook.css"}


class InventoryError(ParamsError):
    """An inventory that cannot be run: one line per problem (the host, the key, the fix)."""


@dataclass
class FleetHost:
    """One host of the inventory: how to reach it and its validated parameters."""

    name: str
    vars: dict
    data: dict  # the merged parameter file (what is written for the host)
    params: Params
    groups: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.vars.get("synapse_address") or self.vars.get("ansible_host") or self.name)

    @property
    def user(self) -> str:
        return str(self.vars.get("ansible_user") or "root")

    @property
    def dir(self) -> str:
        return str(self.vars.get("synapse_dir") or DEFAULT_DIR)

    @property
    def python(self) -> str | None:
        return self.vars.get("synapse_python")

    def to_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "user": self.user, "dir": self.dir,
                "python": self.python, "groups": self.groups, "machine": self.params.machine_name(),
                "phases": self.params.phases}


@dataclass
class Inventory:
    path: Path
    hosts: list[FleetHost]

    def host(self, name: str) -> FleetHost:
        return next(h for h in self.hosts if h.name == name)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def addresses(self) -> dict[str, str]:
        return {h.name: h.address for h in self.hosts}


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, mapping by mapping (lists and values are replaced)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _groups(tree: dict) -> dict[str, tuple[int, dict]]:
    """{group: (depth, its node)} of an inventory tree rooted at ``all`` (depth 0)."""
    out: dict[str, tuple[int, dict]] = {}

    def walk(name: str, node: Any, depth: int) -> None:
        node = node or {}
        if not isinstance(node, dict):
            raise InventoryError([f"group `{name}` must be a mapping (hosts, vars, children), not {type(node).__name__}"])
        if name not in out or out[name][0] < depth:
            out[name] = (depth, node)
        for child, sub in (node.get("children") or {}).items():
            walk(str(child), sub, depth + 1)

    walk("all", tree.get("all", tree), 0)
    return out


def host_vars(tree: dict) -> dict[str, tuple[dict, list[dict], list[str]]]:
    """Per host: (its own vars, the vars of its groups in merge order, the group names)."""
    groups = _groups(tree)
    member: dict[str, list[str]] = {}
    own: dict[str, dict] = {}
    for g, (_, node) in groups.items():
        for h, hv in (node.get("hosts") or {}).items():
            member.setdefault(str(h), []).append(g)
            if hv:
                own[str(h)] = deep_merge(own.get(str(h), {}), hv)
    out = {}
    for h, gs in member.items():
        chain = {"all"} | set(gs)
        # the ancestors of each group the host is in (a child inherits its parents' vars)
        changed = True
        while changed:
            changed = False
            for g, (_, node) in groups.items():
                if g not in chain and set(node.get("children") or {}) & chain:
                    chain.add(g)
                    changed = True
        ordered = sorted(chain, key=lambda g: (groups[g][0], g))
        out[h] = (own.get(h, {}), [groups[g][1].get("vars") or {} for g in ordered], ordered)
    return out


def _parameter_data(inv: Path, name: str, own: dict, group_vars: list[dict]) -> tuple[dict, dict]:
    from ..core.paths import resolve_in_project

    merged_vars: dict = {}
    for gv in [*group_vars, own]:
        merged_vars = deep_merge(merged_vars, {k: v for k, v in gv.items() if k != "synapse"})
    data: dict = {}
    base = merged_vars.get("synapse_params_file")
    if base:
        p = resolve_in_project(base) if not Path(base).is_absolute() else Path(base)
        if not p.exists():
            p2 = (inv.parent / base).resolve()
            p = p2 if p2.exists() else p
        if not p.exists():
            raise InventoryError([f"{inv} (host {name}): synapse_params_file {base!r} does not exist: name a "
                                  "parameter file (relative to the project or the inventory)"])
        data = yaml.safe_load(p.read_text()) or {}
    for gv in [*group_vars, own]:
        syn = gv.get("synapse")
        if syn is None:
            continue
        if not isinstance(syn, dict):
            raise InventoryError([f"{inv} (host {name}): variable `synapse` must be a mapping of parameter-file keys, "
                                  f"not {type(syn).__name__}"])
        data = deep_merge(data, syn)
    data.setdefault("schema_version", 1)
    data.setdefault("machine", {})
    if isinstance(data["machine"], dict) and data["machine"].get("name", "auto") == "auto":
        data["machine"]["name"] = name
    return data, merged_vars


def parse_inventory(text: str, path: str | Path = "<inventory>") -> Inventory:
    """The inventory's hosts with their validated parameters. Every problem of every host is
    collected first, so one run shows them all."""
    path = Path(path)
    tree, problems = read_yaml(text, str(path))
    if problems:
        raise InventoryError(problems)
    if not isinstance(tree, dict) or not tree:
        raise InventoryError([f"{path}: an inventory is a YAML mapping with `all:` (hosts, vars, children); see "
                              "the README's fleet section"])
    problems: list[str] = []
    hosts: list[FleetHost] = []
    for name, (own, gvars, groups) in host_vars(tree).items():
        where = f"{path} (host {name})"
        if not HOST_NAME.match(name) or name in RESERVED:
            problems.append(f"{where}: host name {name!r} cannot be a folder under outputs/: use letters, digits, "
                            "'.', '_' or '-' (and not fleet)")
            continue
        try:
            data, merged = _parameter_data(path, name, own, gvars)
        except InventoryError as e:
            problems += e.problems
            continue
        try:
            params = parse_params(data, where)
        except ParamsError as e:
            problems += e.problems
            continue
        if params.machine_name() != name:
            problems.append(f"{where}: key `machine.name`: {params.machine_name()!r} differs from the inventory name; "
                            "remove machine.name from the host's synapse variables (the inventory name is used)")
            continue
        addr = merged.get("synapse_address") or merged.get("ansible_host")
        if merged.get("synapse_address"):
            try:
                ipaddress.ip_address(str(addr))
            except ValueError:
                problems.append(f"{where}: key `synapse_address`: {addr!r} is not an IP address: give the host's "
                                "fleet address")
        for key in ("synapse_dir", "synapse_python"):
            if merged.get(key) and not str(merged[key]).startswith("/"):
                problems.append(f"{where}: key `{key}`: {merged[key]!r} is not an absolute path on the host: "
                                "write it from /")
        hosts.append(FleetHost(name, merged, data, params, [g for g in groups if g != "all"]))
    if not hosts and not problems:
        problems.append(f"{path}: the inventory names no hosts: add them under all.hosts or a group's hosts")
    if problems:
        raise InventoryError(problems)
    return Inventory(path, sorted(hosts, key=lambda h: h.name))


def load_inventory(path: str | Path) -> Inventory:
    from ..core.paths import resolve_in_project

    p = resolve_in_project(path)
    if not p.exists():
        raise InventoryError([f"{p}: no such inventory; write one (see the README's fleet section)"])
    return parse_inventory(p.read_text(), p)


def parameter_file_text(host: FleetHost) -> str:
    """The parameter file written for ``host`` (its merged ``synapse`` variables)."""
    head = (f"# Synapse parameters for fleet host {host.name}, rendered from the inventory's `synapse` variables\n"
            "# (group and host levels merged). Written by `aios fleet`; edit the inventory, not this file.\n")
    return head + yaml.safe_dump(host.data, sort_keys=False, default_flow_style=None)
