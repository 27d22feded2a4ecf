"""Parameter files: the only reader of ``parameters/*.yaml``.

A phase gets a typed :class:`Params`, never a raw dict. Unknown keys, wrong types and impossible
values each become one line of :class:`ParamsError` naming the file, the key and the fix.

Every value is checked and normalised here, once, when the file loads (the types of
:mod:`aios_lib.params.types`, the sections' validators and the rules between sections below), so
``aios check`` refuses what ``aios run`` would refuse and the phases trust what they get:

* a key given twice in one mapping (YAML would keep the last without a word): :func:`duplicate_keys`;
* values the target would reject or silently ignore: sysctl names and ranges
  (:mod:`aios_lib.params.sysctl_names`; against this kernel's /proc/sys too when the file describes
  this host, :meth:`Params.targets_this_host`), journald.conf options, unit names and the values the
  service unit is written from (:mod:`aios_lib.params.systemd_values`), sizes and counts that must be
  positive, root as the service user;
* settings that contradict each other, and what a phase would refuse for a reason the file shows:
  :func:`contradictions`.

What is allowed but worth saying is in :attr:`Params.warnings`, among it the files named that do
not exist yet (:func:`not_there_yet`: `aios plan` shows those phases, `aios run` refuses them).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from .base import Section
from .kernel import Kernel
from .kernel_cmdline import MITIGATIONS_OFF, value_of
from .machine import Machine, Target
from .runtime import Runtime
from .service import Service
from .system import BaseSystem

SCHEMA_VERSION = 1

#: Notebook ids in run order. Each id is the prefix of a file in notebooks/.
ALL_PHASES = ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


class ParamsError(ValueError):
    """A parameter file is missing or invalid. ``str()`` is one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Params(Section):
    schema_version: int
    machine: Machine = Machine()
    #: the notebooks `aios run` executes when no phase is named
    phases: list[str] = Field(default_factory=lambda: ["01", "04", "05", "07"])
    target: Target = Target()
    system: BaseSystem = BaseSystem()
    kernel: Kernel = Kernel()
    runtime: Runtime = Runtime()
    service: Service = Service()

    #: where this file was read from (not a key of the file)
    source_file: Path | None = Field(default=None, exclude=True)
    #: the tuned profile named by service.profile and what it set (params/profile.py; not a key)
    _profile: dict | None = PrivateAttr(default=None)

    @property
    def profile(self) -> dict | None:
        return self._profile

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is newer than this Synapse understands ({SCHEMA_VERSION}); "
                             "update Synapse or write the file for version 1")
        if v < 1:
            raise ValueError("schema_version must be 1")
        return v

    @field_validator("phases")
    @classmethod
    def _known_phases(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in ALL_PHASES]
        if bad:
            raise ValueError(f"unknown phase(s) {bad}; phases are {ALL_PHASES}")
        return v

    @model_validator(mode="after")
    def _rules_between_sections(self):
        problems = [] if self.machine.trusted_offline else [
            f"key `{key}`: `{MITIGATIONS_OFF}` needs machine.trusted_offline: true (it disables CPU "
            f"vulnerability mitigations); set it or remove {MITIGATIONS_OFF}"
            for key, tokens in self._trusted_cmdlines() if MITIGATIONS_OFF in tokens]
        problems += contradictions(self)
        if problems:  # one line each (see _explain)
            raise ValueError("\n".join(problems))
        return self

    def targets_this_host(self) -> bool:
        """Whether these parameters describe the machine that reads them: nothing is installed
        elsewhere (``target.kind: none``) and the machine is this host (``auto`` or its name)."""
        import socket

        return self.target.kind == "none" and self.machine.name in ("auto", socket.gethostname().split(".")[0])

    def _trusted_cmdlines(self) -> list[tuple[str, list[str]]]:
        """The command lines a target machine boots with (mitigations=off there needs trust)."""
        return [("system.kernel_cmdline", self.system.kernel_cmdline),
                ("kernel.install.cmdline", self.kernel.install.cmdline)]

    def _rule_warnings(self) -> list[tuple[str, str]]:
        thp = self.system.thp
        return [(key, f"transparent_hugepage={v} on the command line differs from system.thp={thp}; "
                      "the tmpfiles.d setting wins after boot")
                for key, tokens in self._trusted_cmdlines()
                if (v := value_of(tokens, "transparent_hugepage")) is not None and v != thp] + not_there_yet(self)

    @property
    def warnings(self) -> list[str]:
        """What the file allows but a reader should know, one line each: ``key `K`: warning``.

        Mount options dropped while normalising, ``mitigations=off``, a THP mode the command line
        contradicts. ``aios check`` prints them; the phases record them.
        """
        return [f"key `{k}`: {w}" for k, w in self.field_warnings() + self._rule_warnings()]

    def warnings_for(self, key: str) -> list[str]:
        """The warnings about one key (e.g. ``system.kernel_cmdline``), without the key."""
        return [w for k, w in self.field_warnings() + self._rule_warnings() if k == key]

    def machine_name(self) -> str:
        if self.machine.name != "auto":
            return self.machine.name
        import socket

        return socket.gethostname().split(".")[0] or "localhost"


def _masked(p: "Params") -> set[str]:
    return set(p.system.mask_units) | (set(p.service.mask_units) if p.service.enabled or "06" in p.phases else set())


def contradictions(p: "Params") -> list[str]:
    """Settings of different sections that cannot both hold (one line each: the keys and the fix),
    and what a phase would refuse later for a reason the file already shows."""
    from . import sysctl_names

    out: list[str] = []
    kind = p.target.kind
    if "02" in p.phases and kind == "none":
        out.append("key `target.kind`: phases lists 02, which partitions and installs a disk or an image, but "
                   "target.kind is none; set target.kind (image or disk) or remove 02 from phases")
    if "06" in p.phases and kind == "disk":
        out.append("key `target.kind`: phase 06 builds the Synapse OS image file, but target.kind is disk; set "
                   "target.kind: image (see parameters/synapse-os.yaml) and write the image to the disk with dd, "
                   "or remove 06 from phases")
    if "06" in p.phases and kind == "image" and p.service.engine != "llama-server":
        out.append("key `service.engine`: the Synapse OS image (phase 06) bundles llama-server only, but "
                   f"service.engine is {p.service.engine}; set service.engine: llama-server")
    masked = _masked(p)
    if p.service.ssh and masked & {"ssh.service", "sshd.service", "ssh.socket"}:
        both = sorted(masked & {"ssh.service", "sshd.service", "ssh.socket"})
        out.append(f"key `service.ssh`: service.ssh is true but {', '.join(both)} is in the mask_units lists: "
                   "a masked ssh never starts; remove it from mask_units or set service.ssh: false")
    if p.system.default_target in masked:
        out.append(f"key `system.default_target`: {p.system.default_target} is also in mask_units: the system "
                   "would boot into a masked target; remove it from mask_units")
    storage = str(p.system.journald.get("Storage", "")).strip()
    if storage == "persistent" and p.service.read_only_root and (p.service.enabled or "06" in p.phases):
        out.append("key `system.journald`: Storage=persistent with service.read_only_root: true contradict each "
                   "other: the read-only root keeps nothing written to /var/log/journal across a reboot; use "
                   "Storage=volatile or set service.read_only_root: false")
    k = p.kernel
    if k.enabled and k.install.enabled:
        thp_opt = k.options.get("TRANSPARENT_HUGEPAGE")
        if thp_opt == "n" and p.system.thp != "never":
            out.append(f"key `kernel.options`: TRANSPARENT_HUGEPAGE=n builds a kernel without THP, but system.thp is "
                       f"{p.system.thp}: the setting would have nothing to act on; set system.thp: never or "
                       "TRANSPARENT_HUGEPAGE: y")
        nohz = [key for key, tokens in (("kernel.install.cmdline", k.install.cmdline),
                                        ("system.kernel_cmdline", p.system.kernel_cmdline))
                if value_of(tokens, "nohz_full") is not None]
        if k.options.get("NO_HZ_FULL") == "n" and nohz:
            out.append(f"key `{nohz[0]}`: nohz_full= needs a kernel built with NO_HZ_FULL, but kernel.options sets "
                       "NO_HZ_FULL: n; the kernel would ignore it. Set NO_HZ_FULL: y or remove nohz_full=")
    if p.targets_this_host():
        out += [f"key `system.sysctl`: {problem}" for name, value in p.system.sysctl.items()
                if (problem := sysctl_names.check(name, value, host=True))]
    return out


def not_there_yet(p: "Params") -> list[tuple[str, str]]:
    """Files the parameters name that do not exist yet: `aios plan` shows the phase, `aios run`
    refuses it until they are there (a module list is captured on the target, a model copied in)."""
    from ..core.paths import resolve_in_project

    out = []
    k = p.kernel
    named = [("kernel.lsmod_file", k.lsmod_file if k.enabled and k.localmodconfig else None,
              "capture it on the target with `lsmod > FILE`"),
             ("kernel.base_config_file", k.base_config_file if k.enabled and k.base_config == "file" else None,
              "copy the .config there"),
             ("runtime.model.path", p.runtime.model.path if p.runtime.model.kind == "path" else None,
              "copy the GGUF there")]
    for key, path, fix in named:
        if path and not resolve_in_project(path).exists():
            out.append((key, f"{resolve_in_project(path)} does not exist yet: `aios plan` shows the phase, "
                             f"`aios run` refuses it until the file is there ({fix})"))
    t = p.target
    if (t.kind == "image" and "03" in p.phases and "02" not in p.phases and k.enabled and k.install.enabled
            and t.image and not resolve_in_project(t.image).exists()):
        out.append(("target.image", f"{resolve_in_project(t.image)} does not exist yet: phase 03 installs into "
                                    "phase 02's image; run 02 first or add it to phases"))
    return out


def read_yaml(text: str, shown: str) -> tuple[Any, list[str]]:
    """(the YAML document, []) or (None, one line per problem): invalid YAML with its line, or a key
    given twice in one mapping. Parameter files and fleet inventories are read through this."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        return None, [f"{shown}:{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax"]
    twice = duplicate_keys(text)
    if twice:
        return None, [f"{shown}: {line}" for line in twice]
    return data, []


def duplicate_keys(text: str) -> list[str]:
    """Keys given twice in one YAML mapping (YAML keeps the last without a word): one line each,
    ``line N: key `a.b` is given twice (first on line M)``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []  # the parser's own error is reported instead
    out: list[str] = []

    def walk(node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    dotted = ".".join((*path, key))
                    out.append(f"line {line}: key `{dotted}` is given twice (first on line {seen[key]}); YAML keeps "
                               "only the last one: remove one of them")
                else:
                    seen[key] = line
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    walk(root, ())
    return out


def _key_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _model_at(loc: tuple) -> type[Section] | None:
    """The section class that holds the key at ``loc`` (for suggesting spellings)."""
    model: Any = Params
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if hasattr(model, "model_fields") else None


def _is_section(loc: tuple) -> bool:
    """Whether ``loc`` names a whole section (an error of a rule between its keys), not one key."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        model = field.annotation
    return isinstance(model, type) and issubclass(model, Section)


def _explain(file: str, err: dict) -> list[str]:
    loc = tuple(err.get("loc", ()))
    key = _key_path(loc)
    kind = err.get("type", "")
    got = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = [k for k in (model.model_fields if model else {}) if k != "source_file"]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"allowed here: {', '.join(allowed)}"
        return [f"{file}: unknown key `{key}`: remove it ({hint})"]
    if kind == "missing":
        if key == "schema_version":
            return [f"{file}: missing key `schema_version`: add `schema_version: {SCHEMA_VERSION}` at the top"]
        return [f"{file}: missing key `{key}`: add it"]
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if kind == "value_error" and _is_section(loc):  # a rule between keys: its message names them
        return [f"{file}: {line}" for line in msg.splitlines()]
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    if "\n" in msg:  # a validator that found several problems in one value: one line each
        return [f"{file}: key `{key}`: {line}" for line in msg.splitlines()]
    return [f"{file}: key `{key}`: {msg} (got {shown})"]


def parse_params(data: Any, file: str = "<parameters>") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError([f"{file}: the file must be a YAML mapping of keys to values, not {type(data).__name__}"])
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError([line for err in e.errors() for line in _explain(file, err)]) from None


def load_params(path: str | Path) -> Params:
    from ..core.paths import resolve_in_project

    path = resolve_in_project(path)
    shown = str(path)
    if not path.exists():
        raise ParamsError([f"{shown}: no such parameter file; copy parameters/default.yaml and edit it"])
    data, problems = read_yaml(path.read_text(), shown)
    if problems:
        raise ParamsError(problems)
    params = parse_params(data, shown)
    params.source_file = path
    from .profile import apply_profile

    return apply_profile(params, shown, path.parent)


__all__ = ["Params", "ParamsError", "load_params", "parse_params", "SCHEMA_VERSION", "ALL_PHASES",
           "Machine", "Target", "BaseSystem", "Kernel", "Runtime", "Service"]
