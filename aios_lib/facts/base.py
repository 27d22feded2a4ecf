"""Facts in the pyinfra way: the commands that read a fact plus a pure parse function.

The parse function takes the commands' stdout (a mapping name -> text) and returns plain data.
Tests feed it captured real output from tests/fixtures/, so parsing is checked offline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..runner import Runner


@dataclass(frozen=True)
class Fact:
    name: str
    #: name -> argv. Every command is read-only (runs in plan mode too).
    commands: Mapping[str, tuple[str, ...]]
    parse: Callable[[Mapping[str, str]], Any]
    #: commands whose failure is normal on some machines (no dmidecode, no /sys/firmware/efi ...)
    optional: frozenset[str] = frozenset()


def gather(runner: Runner, fact: Fact) -> Any:
    """Run the fact's commands through the runner (journaled) and parse their output."""
    outputs: dict[str, str] = {}
    for key, argv in fact.commands.items():
        r = runner.probe(list(argv), check=key not in fact.optional, quiet=True)
        outputs[key] = r.stdout if r.rc == 0 else ""
    return fact.parse(outputs)
