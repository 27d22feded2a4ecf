"""Facts in the pyinfra way: the commands that read a fact plus a pure parse function.

The parse function takes the commands' stdout (a mapping name -> text) and returns plain data.
Tests feed it captured real output from tests/fixtures/, so parsing is checked offline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, MutableMapping

from ..core.runner import Runner


@dataclass(frozen=True)
class Fact:
    name: str
    #: name -> argv. Every command is read-only (runs in plan mode too).
    commands: Mapping[str, tuple[str, ...]]
    parse: Callable[[Mapping[str, str]], Any]
    #: commands whose failure is normal on some machines (no dmidecode, no /sys/firmware/efi ...)
    optional: frozenset[str] = frozenset()
    #: name -> argv to try when the command of that name fails (an older tool lacks an option)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: commands whose exit status (or timeout) is part of the answer (``modprobe -n``, ``fsck -n``):
    #: their stdout is kept whatever the exit code, and parse also gets ``<name>.rc``,
    #: ``<name>.timed_out`` and ``<name>.stderr``
    status: frozenset[str] = frozenset()
    #: name -> seconds after which that command is stopped (it then reads as timed out)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    #: run the commands inside this root (a target being built), not on this machine
    root: str | None = None
    #: name -> environment that command needs besides the runner's (a launcher's LD_LIBRARY_PATH)
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def gather_outputs(runner: Runner, fact: Fact,
                   cache: MutableMapping[tuple[str, ...], str] | None = None) -> dict[str, Any]:
    """Run the fact's commands through the runner (journaled); name -> stdout ("" on failure;
    the status commands' output whatever the exit code, with their exit code beside it).

    ``cache`` (argv -> stdout) lets several facts share one run of the same command.
    """
    outputs: dict[str, Any] = {}
    where = {"root": fact.root} if fact.root else {}
    for key, argv in fact.commands.items():
        argv = tuple(argv)
        kw = {**where, "env": dict(fact.env[key])} if fact.env.get(key) else where
        if key in fact.status:
            r = runner.probe(list(argv), check=False, quiet=True, timeout=fact.timeouts.get(key), **kw)
            outputs.update({key: r.stdout, f"{key}.rc": r.rc, f"{key}.timed_out": r.timed_out,
                            f"{key}.stderr": r.stderr})
            continue
        if cache is not None and argv in cache and not fact.root:
            outputs[key] = cache[argv]
            continue
        fallback = fact.fallbacks.get(key)
        lenient = key in fact.optional or fallback is not None
        r = runner.probe(list(argv), check=not lenient, quiet=True, timeout=fact.timeouts.get(key), **kw)
        out = r.stdout if r.rc == 0 else ""
        if r.rc != 0 and fallback is not None:
            r = runner.probe(list(fallback), check=key not in fact.optional, quiet=True, **kw)
            out = r.stdout if r.rc == 0 else ""
        outputs[key] = out
        if cache is not None and not fact.root:
            cache[argv] = out
    return outputs


def gather(runner: Runner, fact: Fact) -> Any:
    """Run the fact's commands through the runner (journaled) and parse their output."""
    return fact.parse(gather_outputs(runner, fact))
