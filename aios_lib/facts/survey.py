"""All facts about a machine at once: ``survey(runner) -> {subject: parsed fact}``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.runner import Runner
from . import cpu, disks, firmware, gpu, kernel, memory, numa, virt, xstate
from .base import Fact, gather_outputs

FACTS: dict[str, Fact] = {m.FACT.name: m.FACT for m in (cpu, memory, numa, disks, firmware, virt, kernel, gpu, xstate)}


def survey_outputs(runner: Runner) -> dict[str, dict[str, str]]:
    """The raw stdout of every fact's commands; a command shared by facts runs once."""
    cache: dict[tuple[str, ...], str] = {}
    return {name: gather_outputs(runner, fact, cache) for name, fact in FACTS.items()}


def parse_outputs(outputs: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {name: FACTS[name].parse(outputs.get(name, {})) for name in FACTS}


def survey(runner: Runner) -> dict[str, Any]:
    """Run every fact's commands through the runner (journaled) and parse them."""
    return parse_outputs(survey_outputs(runner))


def load_fixture(folder: str | Path, fact: Fact) -> dict[str, str]:
    """A fixture folder holds ``<command name>.txt`` per command; a missing file reads as ""."""
    folder = Path(folder)
    return {k: (folder / f"{k}.txt").read_text() if (folder / f"{k}.txt").exists() else "" for k in fact.commands}


def capture_fixture(runner: Runner, folder: str | Path) -> list[Path]:
    """Write this machine's raw outputs as a fixture folder (what tests/fixtures/facts/<machine>/ holds)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for outs in survey_outputs(runner).values():
        for key, text in outs.items():
            p = folder / f"{key}.txt"
            if not p.exists() or not p.read_text():
                p.write_text(text)
                written.append(p)
    return written
