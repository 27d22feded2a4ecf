"""What a notebook opens first: the parameters, the runner, the run folder.

A notebook's ``parameters`` cell sets ``params_file``, ``run_dir`` and ``plan``; its next cell is
``run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="04")``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.journal import Journal
from .params import Params, load_params
from .core.records import Results, hold_run_folder, new_run_id, run_dir_for
from .core.runner import Runner


@dataclass
class Run:
    params: Params
    runner: Runner
    dir: Path
    phase: str
    results: Results = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def plan(self) -> bool:
        return self.runner.plan

    def record(self, key: str, value: Any) -> Any:
        """Keep ``value`` in results.json under this phase; returns it unchanged."""
        return self.results.record(self.phase, key, value)

    def recorded(self, phase: str, key: str, default: Any = None) -> Any:
        return self.results.get(phase, key, default)

    def plan_summary(self):
        """The commands this phase ran or planned, as a table (the plan-mode preview)."""
        import pandas as pd

        rows = [{"kind": r.kind, "planned": r.planned, "rc": r.rc, "seconds": round(r.duration, 2),
                 "command": r.cmdline} for r in self.runner.history]
        return pd.DataFrame(rows, columns=["kind", "planned", "rc", "seconds", "command"])

    def __repr__(self) -> str:
        mode = "PLAN (changes are listed, not made)" if self.plan else "RUN"
        t = self.params.target
        target = f"{t.kind}" + (f" {t.what}" + (" (confirmed)" if t.confirmed else " (NOT confirmed)") if t.what else "")
        return (f"Synapse run {self.dir.name} · phase {self.phase} · {mode}\n"
                f"  machine: {self.params.machine_name()}  parameters: {self.params.source_file}\n"
                f"  target: {target}\n  record: {self.dir}")


def confirmations(params: Params) -> frozenset[str]:
    """Device paths the parameters confirm for destructive steps."""
    t = params.target
    if not t.confirmed:
        return frozenset()
    keys = {t.confirm}
    if t.kind == "disk":
        try:
            keys.add(str(Path(t.confirm).resolve()))
        except OSError:
            pass
    return frozenset(keys)


def open_run(params_file: "str | os.PathLike | Params" = "parameters/default.yaml",
             run_dir: str | os.PathLike | None = None, plan: bool = False, phase: str = "") -> Run:
    """Open a run. ``params_file`` may also be a Params object (tests build them in code)."""
    params = params_file if isinstance(params_file, Params) else load_params(params_file)
    if run_dir:
        d = Path(run_dir)
        d.mkdir(parents=True, exist_ok=True)
    else:  # stepping through in JupyterLab: a run folder of its own
        d = run_dir_for(params.machine_name(), new_run_id(plan, "lab"))
    hold_run_folder(d)  # `aios run --resume` waits for every process working in the folder, and its commands
    journal = Journal(d / "commands.jsonl")
    runner = Runner(journal=journal, plan=plan, confirmed_devices=confirmations(params), phase=phase)
    return Run(params=params, runner=runner, dir=d, phase=phase, results=Results(d / "results.json"))
