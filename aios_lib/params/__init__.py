"""Parameter files: the only reader of ``parameters/*.yaml``.

A phase gets a typed :class:`Params`, never a raw dict. Unknown keys, wrong types and impossible
values each become one line of :class:`ParamsError` naming the file, the key and the fix.

Every value is checked and normalised here, once, when the file loads (the types of
:mod:`aios_lib.params.types`, the sections' validators and the rules between sections below), so
``aios check`` refuses what ``aios run`` would refuse and the phases trust what they get.
What is allowed but worth saying is in :attr:`Params.warnings`.
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
ALL_PHASES = ["01", "02", "03", "04", "05", "06", "07", "08"]


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
        if self.machine.trusted_offline:
            return self
        problems = [f"key `{key}`: `{MITIGATIONS_OFF}` needs machine.trusted_offline: true (it disables CPU "
                    f"vulnerability mitigations); set it or remove {MITIGATIONS_OFF}"
                    for key, tokens in self._trusted_cmdlines() if MITIGATIONS_OFF in tokens]
        if problems:  # one line each (see _explain)
            raise ValueError("\n".join(problems))
        return self

    def _trusted_cmdlines(self) -> list[tuple[str, list[str]]]:
        """The command lines a target machine boots with (mitigations=off there needs trust)."""
        return [("system.kernel_cmdline", self.system.kernel_cmdline),
                ("kernel.install.cmdline", self.kernel.install.cmdline)]

    def _rule_warnings(self) -> list[tuple[str, str]]:
        thp = self.system.thp
        return [(key, f"transparent_hugepage={v} on the command line differs from system.thp={thp}; "
                      "the tmpfiles.d setting wins after boot")
                for key, tokens in self._trusted_cmdlines()
                if (v := value_of(tokens, "transparent_hugepage")) is not None and v != thp]

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
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError([f"{shown}:{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax"]) from None
    params = parse_params(data, shown)
    params.source_file = path
    from .profile import apply_profile

    return apply_profile(params, shown, path.parent)


__all__ = ["Params", "ParamsError", "load_params", "parse_params", "SCHEMA_VERSION", "ALL_PHASES",
           "Machine", "Target", "BaseSystem", "Kernel", "Runtime", "Service"]
