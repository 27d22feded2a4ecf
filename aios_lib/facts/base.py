"""Facts in the pyinfra way: the commands that read a fact plus a pure parse function.

The parse function takes the commands' stdout (a mapping name -> text) and returns plain data.
Tests feed it captured real output from tests/fixtures/, so parsing is checked offline.

A fact whose answer is in the exit status or on stderr (``dpkg-query`` of a missing package,
``systemd-analyze verify``, a ``--help`` printed to stderr) names those commands in ``status``;
``options`` gives a command the runner keywords it needs (``env``, ``timeout``, ``input``).
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
    #: commands whose exit status and stderr the parse reads too: it gets their stdout even when
    #: they fail, ``<name>.stderr`` and ``<name>.rc`` (the exit code as text); they never raise
    status: frozenset[str] = frozenset()
    #: name -> extra runner keywords for that command (``env``, ``timeout``, ``input``)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def gather_outputs(runner: Runner, fact: Fact,
                   cache: MutableMapping[tuple[str, ...], str] | None = None) -> dict[str, str]:
    """Run the fact's commands through the runner (journaled); name -> stdout ("" on failure).

    ``cache`` (argv -> stdout) lets several facts share one run of the same command.
    """
    outputs: dict[str, str] = {}
    for key, argv in fact.commands.items():
        argv = tuple(argv)
        kw = dict(fact.options.get(key, {}))
        if key in fact.status:
            r = runner.probe(list(argv), check=False, quiet=True, **kw)
            outputs[key] = r.stdout or ""
            outputs[f"{key}.stderr"] = r.stderr or ""
            outputs[f"{key}.rc"] = "" if r.rc is None else str(r.rc)
            continue
        if cache is not None and argv in cache:
            outputs[key] = cache[argv]
            continue
        fallback = fact.fallbacks.get(key)
        lenient = key in fact.optional or fallback is not None
        r = runner.probe(list(argv), check=not lenient, quiet=True, **kw)
        out = r.stdout if r.rc == 0 else ""
        if r.rc != 0 and fallback is not None:
            r = runner.probe(list(fallback), check=key not in fact.optional, quiet=True, **kw)
            out = r.stdout if r.rc == 0 else ""
        outputs[key] = out
        if cache is not None:
            cache[argv] = out
    return outputs


def gather(runner: Runner, fact: Fact) -> Any:
    """Run the fact's commands through the runner (journaled) and parse their output."""
    return fact.parse(gather_outputs(runner, fact))
