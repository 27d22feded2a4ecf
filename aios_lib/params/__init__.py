"""Parameter files: the only reader of ``parameters/*.yaml``.

A phase gets a typed :class:`Params`, never a raw dict. Unknown keys, wrong types and impossible
values each become one line of :class:`ParamsError` naming the file, the key and the fix.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from .base import Section
from .kernel import Kernel
from .machine import Machine, Target
from .runtime import Runtime
from .service import Service
from .system import BaseSystem

SCHEMA_VERSION = 1

#: Notebook ids in run order. Each id is the prefix of a file in notebooks/.
ALL_PHASES = ["01", "02", "03", "04", "05", "06", "07"]


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


def _explain(file: str, err: dict) -> str:
    loc = tuple(err.get("loc", ()))
    key = _key_path(loc)
    kind = err.get("type", "")
    got = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = [k for k in (model.model_fields if model else {}) if k != "source_file"]
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"allowed here: {', '.join(allowed)}"
        return f"{file}: unknown key `{key}`: remove it ({hint})"
    if kind == "missing":
        if key == "schema_version":
            return f"{file}: missing key `schema_version`: add `schema_version: {SCHEMA_VERSION}` at the top"
        return f"{file}: missing key `{key}`: add it"
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"{file}: key `{key}`: {msg} (got {shown})"


def parse_params(data: Any, file: str = "<parameters>") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError([f"{file}: the file must be a YAML mapping of keys to values, not {type(data).__name__}"])
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError([_explain(file, err) for err in e.errors()]) from None


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
    return params


__all__ = ["Params", "ParamsError", "load_params", "parse_params", "SCHEMA_VERSION", "ALL_PHASES",
           "Machine", "Target", "BaseSystem", "Kernel", "Runtime", "Service"]
