"""What a notebook opens first: the parameters, the runner, the run folder.

A notebook's ``parameters`` cell sets ``params_file``, ``run_dir`` and ``plan``; its next cell is
``run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="04")``.

``run_dir`` is given by ``aios run``/``aios plan`` (papermill) and by ``aios lab`` (a session's
copy of the notebooks); a template opened directly from notebooks/ has none and records into
``outputs/_scratch/`` (ignored by git, not in the index).
"""
from __future__ import annotations

import html
import os
import re
import textwrap
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core.journal import Journal
from .core.paths import outputs_dir
from .core.progress import interactive
from .core.records import Results, hold_run_folder, new_run_id
from .core.result import CommandResult
from .core.runner import DESTRUCTIVE, PROBE, WORK, Runner, _device_keys
from .params import Params, load_params

#: What leaving plan mode does, per phase (the run header and the parameters cells say it).
PHASE_CHANGES = {
    "01": "changes nothing: it only reads the machine, and plan and run mode give the same answers",
    "02": "partitions, formats and installs the base system onto the target ({target}), then boots it in QEMU",
    "03": "builds the kernel into ~/.cache/synapse and, with kernel.install.enabled, installs it into the "
          "target ({target})",
    "04": "builds llama.cpp into ~/.cache/synapse, verifies it and downloads the model",
    "05": "runs the benchmarks (minutes to hours); host settings changed for a measurement are restored",
    "06": "installs the inference service and its hardening into the target ({target}) and builds the image",
    "07": "changes nothing on the machine: it compares records under outputs/",
}
#: phases with steps that write a block device or image (they need target.confirm)
DESTRUCTIVE_PHASES = frozenset({"02", "03", "06"})
#: where a template opened directly records (``.gitignore`` lists it; the index does not look there)
SCRATCH = "_scratch"


@dataclass(eq=False)  # a run is itself (hashable: the notebook's cells are followed per run)
class Run:
    params: Params
    runner: Runner
    dir: Path
    phase: str
    results: Results = field(repr=False, default=None)  # type: ignore[assignment]
    #: opened from a template in notebooks/ (no run_dir): the record is scratch
    scratch: bool = False
    #: (index into runner.history, the cell that started there): the steps of plan_summary()
    steps: list[tuple[int, str]] = field(default_factory=list, repr=False)
    #: the notebook prompt that must be answered before destructive steps (interactive sessions)
    prompt: Any = field(default=None, repr=False)

    @property
    def plan(self) -> bool:
        return self.runner.plan

    def record(self, key: str, value: Any) -> Any:
        """Keep ``value`` in results.json under this phase; returns it unchanged."""
        return self.results.record(self.phase, key, value)

    def recorded(self, phase: str, key: str, default: Any = None) -> Any:
        return self.results.get(phase, key, default)

    def plan_summary(self) -> "PlanSummary":
        """Every command this phase ran or planned, grouped by the cell that issued it, in full."""
        return PlanSummary.of(self)

    # ---- the run header ----------------------------------------------------------------
    def _target(self) -> str:
        t = self.params.target
        if not t.what:
            return t.kind
        return f"{t.kind} {t.what}" + (" (confirmed)" if t.confirmed else " (NOT confirmed)")

    def changes(self) -> str:
        """What this phase changes once plan mode is left."""
        text = PHASE_CHANGES.get(self.phase, "runs every command it now lists")
        return text.format(target=self._target())

    def _switch_lines(self) -> list[str]:
        """How to leave plan mode, and what that does (or that it has been left)."""
        if self.plan:
            lines = ["PLAN mode: commands that would change something are listed, not run; read-only "
                     "probes run.",
                     "To run for real: set `plan = False` in the parameters cell and run all cells again "
                     f"(or `aios run {self.phase or 'NN'} --params FILE`). This phase then "
                     f"{self.changes()}."]
        else:
            lines = [f"RUN mode: this phase {self.changes()}. `plan = True` in the parameters cell "
                     "lists the commands instead."]
        if self.phase in DESTRUCTIVE_PHASES and self.params.target.what:
            lines.append("Steps that write the target run only when `target.confirm` in the parameter file "
                         "repeats it exactly" + (", and after you confirm in the prompt below."
                                                 if self.prompt is not None else "."))
        if self.scratch:
            lines.append("This is a template from notebooks/: its record goes to outputs/_scratch/ (not kept, "
                         "not in the index), and what you save here changes the template. For a session "
                         "whose notebooks become its record: `make lab` (or `aios lab --params FILE "
                         f"{self.phase or 'NN'}`).")
        return lines

    def __repr__(self) -> str:
        mode = "PLAN (changes are listed, not made)" if self.plan else "RUN"
        return (f"Synapse run {self.dir.name} · phase {self.phase} · {mode}\n"
                f"  machine: {self.params.machine_name()}  parameters: {self.params.source_file}\n"
                f"  target: {self._target()}\n  record: {self.dir}\n"
                + "\n".join(textwrap.fill(line, 100, initial_indent="  ", subsequent_indent="    ")
                            for line in self._switch_lines()))

    def _repr_markdown_(self) -> str:
        mode = "PLAN" if self.plan else "RUN"
        return (f"**Synapse run `{self.dir.name}` · phase {self.phase} · {mode}**\n\n"
                f"- machine: `{self.params.machine_name()}` · parameters: `{self.params.source_file}`\n"
                f"- target: {self._target()}\n- record: `{self.dir}`\n\n"
                + "\n\n".join(("> " if i == 0 else "") + line for i, line in enumerate(self._switch_lines())))

    def _ipython_display_(self) -> None:
        from IPython.display import Markdown, display

        display(Markdown(self._repr_markdown_()))
        if self.prompt is not None:
            display(self.prompt.widget)


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
    scratch = not run_dir
    if run_dir:
        d = Path(run_dir)
    else:  # a template opened directly: a scratch record that git ignores and the index skips
        d = outputs_dir() / SCRATCH / params.machine_name() / new_run_id(plan, "template")
    d.mkdir(parents=True, exist_ok=True)
    hold_run_folder(d)  # `aios run --resume` waits for every process working in the folder, and its commands
    journal = Journal(d / "commands.jsonl")
    runner = Runner(journal=journal, plan=plan, confirmed_devices=confirmations(params), phase=phase)
    run = Run(params=params, runner=runner, dir=d, phase=phase, results=Results(d / "results.json"),
              scratch=scratch)
    _follow_cells(run)
    if not scratch:
        from .lab import note_phase_opened

        note_phase_opened(d, phase, plan)
    if interactive() and not plan and phase in DESTRUCTIVE_PHASES and params.target.what:
        from .lab import ConfirmPrompt

        run.prompt = ConfirmPrompt(run, confirmations(params))
    return run


# ---- steps: the notebook cell each command came from ---------------------------------------
_FOLLOWED: "weakref.WeakSet[Run]" = weakref.WeakSet()
_HOOKED: set[int] = set()


def _step_label(cell: str | None) -> str:
    """A cell's first line of code (what a reader recognises: ``image.partition(run, base)``)."""
    for line in (cell or "").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "%")):
            return line if len(line) <= 90 else line[:89] + "…"
    return "(cell)"


def _follow_cells(run: Run) -> None:
    """In a notebook kernel, mark where each cell's commands start in ``run.runner.history``."""
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except ImportError:
        return
    if ip is None:
        return
    history = ip.user_ns.get("In") or [""]
    run.steps.append((len(run.runner.history), _step_label(history[-1])))
    _FOLLOWED.add(run)
    if id(ip) not in _HOOKED:
        def before_cell(info) -> None:
            label = _step_label(getattr(info, "raw_cell", ""))
            for r in list(_FOLLOWED):
                r.steps.append((len(r.runner.history), label))

        ip.events.register("pre_run_cell", before_cell)
        _HOOKED.add(id(ip))


# ---- the plan preview -------------------------------------------------------------------
KIND_ORDER = ("probe", "change", "work", "destructive")
KIND_MEANS = {
    "probe": "reads only; runs in plan mode too",
    "change": "changes files, packages or settings",
    "work": "builds or measures; changes only the cache and the record",
    "destructive": "writes a block device or image; needs target.confirm",
}


@dataclass
class PlanRow:
    number: int
    step: str
    kind: str
    status: str  # planned | ok | rc N | timed out
    command: str
    note: str
    needs: str
    content: str = ""  # what a planned file write would write


@dataclass
class PlanSummary:
    """Every command of one phase (``Run.plan_summary()``): in full, grouped by the notebook cell
    that issued it, with what each would need to run; planned rows say "planned", not "ok"."""

    phase: str
    plan: bool
    rows: list[PlanRow]

    @classmethod
    def of(cls, run: Run) -> "PlanSummary":
        marks = sorted(run.steps)
        confirmed = set(confirmations(run.params))  # what the parameter file confirms
        prompted = run.prompt is not None or (interactive() and run.phase in DESTRUCTIVE_PHASES)
        rows = []
        for i, r in enumerate(run.runner.history):
            step = next((label for start, label in reversed(marks) if start <= i), "")
            rows.append(PlanRow(i + 1, step, r.kind, _status(r), r.cmdline, _REFUSAL_NOTE.sub("", r.note or ""),
                                _needs(r, run.plan, confirmed, prompted),
                                r.stdout if r.planned and r.argv[:1] == ["write"] else ""))
        return cls(run.phase, run.plan, rows)

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.kind for r in self.rows)
        return {k: c.get(k, 0) for k in KIND_ORDER}

    @property
    def planned(self) -> int:
        return sum(r.status == "planned" for r in self.rows)

    def headline(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        return (f"Phase {self.phase} · {'plan' if self.plan else 'run'}: {len(self.rows)} commands ({kinds}); "
                f"{self.planned} planned, {len(self.rows) - self.planned} ran")

    def groups(self) -> list[tuple[str, list[PlanRow]]]:
        out: list[tuple[str, list[PlanRow]]] = []
        for r in self.rows:
            if not out or out[-1][0] != r.step:
                out.append((r.step, []))
            out[-1][1].append(r)
        return out

    def table(self):
        import pandas as pd

        cols = ["number", "step", "kind", "status", "command", "note", "needs"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.rows], columns=cols)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        lines = [self.headline()]
        for step, rows in self.groups():
            lines.append(f"── {step or 'commands'}")
            for r in rows:
                head = f"{r.number:4d} {r.kind:<11} {r.status:<8} "
                pad = " " * len(head)
                lines.append(textwrap.fill(r.command, 110, initial_indent=head, subsequent_indent=pad + "  ",
                                           break_on_hyphens=False))
                for label, text in (("note", r.note), ("needs", r.needs)):
                    if text and not (label == "needs" and r.kind == PROBE):
                        lines.append(textwrap.fill(f"{label}: {text}", 110, initial_indent=pad,
                                                   subsequent_indent=pad + "  "))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        legend = "".join(f"<li><b>{k}</b> ({n}): {KIND_MEANS[k]}</li>" for k, n in self.counts.items())
        parts = [f"<div class='synapse-plan'><p><b>{esc(self.headline())}</b></p><ul>{legend}</ul>",
                 "<table style='border-collapse:collapse;width:100%'>",
                 "<tr><th style='text-align:right'>#</th><th>kind</th><th>status</th>"
                 "<th style='text-align:left'>command</th><th style='text-align:left'>would need</th></tr>"]
        colors = {"planned": "#9a6700", "ok": "#1a7f37"}
        for step, rows in self.groups():
            parts.append(f"<tr><td colspan='5' style='text-align:left;padding-top:0.8em'>"
                         f"<b>step</b> <code>{esc(step or 'commands')}</code></td></tr>")
            for r in rows:
                cmd = f"<pre style='white-space:pre-wrap;word-break:break-all;margin:0'>{esc(r.command)}</pre>"
                if r.note:
                    cmd += f"<div style='color:#57606a'>{esc(r.note)}</div>"
                if r.content:
                    cmd += (f"<details><summary>content</summary><pre style='white-space:pre-wrap'>"
                            f"{esc(r.content)}</pre></details>")
                color = colors.get(r.status, "#cf222e")
                parts.append(f"<tr style='vertical-align:top;border-top:1px solid #ddd'>"
                             f"<td style='text-align:right'>{r.number}</td><td>{r.kind}</td>"
                             f"<td style='color:{color}'>{esc(r.status)}</td>"
                             f"<td style='text-align:left'>{cmd}</td>"
                             f"<td style='text-align:left'>{esc('' if r.kind == PROBE else r.needs)}</td></tr>")
        parts.append("</table></div>")
        return "".join(parts)


def _status(r: CommandResult) -> str:
    if r.planned:
        return "planned"
    if r.timed_out:
        return "timed out"
    return "ok" if r.rc == 0 else f"rc {r.rc}"


def _needs(r: CommandResult, plan: bool, confirmed: set[str], prompted: bool) -> str:
    """What would make a planned command run (empty for what ran)."""
    if r.kind == PROBE:
        return KIND_MEANS[PROBE]
    if not r.planned:
        return ""
    if not plan:  # planned inside a real run: the phase shows it without running it (see the note)
        return "shown only: this run does not run it (see the note)"
    if r.kind != DESTRUCTIVE:
        return "plan = False" + ("; heavy, minutes or more" if r.kind == WORK else "")
    dev = r.device or "?"
    given = bool(r.device) and bool(_device_keys(r.device) & confirmed)
    return (f"plan = False, and a confirmation, because it writes {dev}: target.confirm in the parameter "
            "file must repeat that path " + ("(it does)" if given else "(it does not yet: a real run refuses this)")
            + ("; then your click in the prompt under the run header" if prompted else ""))


#: what the runner adds to a planned destructive command's note; the summary says it under "needs"
_REFUSAL_NOTE = re.compile(r"(^|; )a real run refuses this until target\.confirm is exactly '[^']*'$")
