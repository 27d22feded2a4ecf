"""``aios``: run, plan and inspect Synapse phases from a terminal.

Thin on purpose: every verb calls one function of the library.
"""
from __future__ import annotations

import argparse
import sys

from .params import ALL_PHASES, ParamsError

EPILOG = """\
phases (notebooks/NN_*.ipynb):
  01 research & prep   survey CPU, memory, disks, firmware; answer the blueprint's Phase 1 questions
  02 base system       partition, bootstrap, configure and boot-check a disk or disk image
  03 kernel            apply the kernel table, show what stuck, build, boot and read it back
  04 AI runtime        build llama.cpp for this CPU, provision and inspect the model
  05 benchmark         Synapse against stock llama.cpp: paired rounds, the knob screen, served latency
  06 hardening         the inference service, read-only root, the distributable image
  07 compare           runs side by side with confidence intervals
  08 tune              race runtime and host settings; write a tuned profile phase 06 can deploy
  09 fleet             the fleet report: one row per host of the newest `aios fleet run`

examples:
  aios plan --params parameters/default.yaml      list every command, change nothing
  aios run --params parameters/default.yaml       survey, build and benchmark this machine
  aios run 02 --params parameters/my-box.yaml     only the base-system phase
  aios run --resume outputs/my-box/<run-id>       continue an interrupted or failed run where it stopped
  aios check parameters/my-box.yaml               validate a parameter file
  aios model check model.gguf                     check a downloaded GGUF before serving it
  aios bench                                      Synapse vs stock on this machine, the verdict only
  aios tune --budget 900                          search the fastest settings; writes a profile
  aios lab 01 02 --params parameters/my-box.yaml  step through in JupyterLab (a session copy)
  aios fleet plan --inventory fleet.yaml          every command on every host of an inventory, none run
  aios fleet run --inventory fleet.yaml           the runbook on every host (Ansible), records fetched

Destructive phases (02, 03 install, 06 image) write only the target named in the parameter
file, and only when target.confirm repeats that exact device or image path.
Records go to outputs/<machine>/<run-id>/ (notebooks, HTML, commands.jsonl, results.json).
"""


def _phases(values: list[str]) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        v = v.zfill(2) if v.isdigit() else v
        if v not in ALL_PHASES:
            raise ParamsError([f"unknown phase {v!r}: phases are {', '.join(ALL_PHASES)}"])
        out.append(v)
    return out


RESUME_HELP = ("continue the interrupted or failed run in RUN_DIR from its first unfinished phase, into the same "
               "folder, with the parameters it started with (what a kill left half-done is cleaned or finished "
               "first); with `aios plan`: only say what a resume would do")


def _cmd_resume(args, plan: bool) -> int:
    from . import resume
    from .execute import resume_run

    if args.phase or args.label:
        raise resume.ResumeRefused("--resume continues the phases and parameters RUN_DIR recorded; name no phase "
                                   "and no --label")
    if args.params:
        raise resume.ResumeRefused("--resume uses the parameters RUN_DIR recorded (run.json params_file); leave out "
                                   "--params")
    if plan:
        print("\n".join(resume.preview(args.resume)))
        return 0
    outcome = resume_run(args.resume, log_output=not args.quiet)
    print(f"resumed from phase {outcome.resumed_from}")
    return _print_outcome(outcome, plan=False)


def _cmd_run(args, plan: bool) -> int:
    from .execute import run_phases

    if args.resume:
        return _cmd_resume(args, plan)
    outcome = run_phases(args.params or "parameters/default.yaml", _phases(args.phase), plan=plan,
                         label=args.label or "",
                         log_output=not args.quiet)
    return _print_outcome(outcome, plan)


def _print_outcome(outcome, plan: bool) -> int:
    for p in outcome.phases:
        line = f"{p.phase} {p.notebook or '-'}: {p.status} ({p.seconds:.0f}s)"
        print(line + (f"\n   {p.error}" if p.error else ""))
    print(f"record: {outcome.run_dir}")
    if plan:
        from .core.journal import read_journal

        entries = read_journal(outcome.run_dir / "commands.jsonl")
        planned = [e for e in entries if e.get("planned")]
        print(f"\nplan: {len(planned)} command(s) would change the system; none ran:")
        for e in planned:
            print(f"  [{e['phase']}] {e['cmdline']}")
    return 0 if outcome.ok else 1


def _cmd_check(args) -> int:
    from .params import load_params

    p = load_params(args.file)
    t = p.target
    print(f"{p.source_file}: valid (schema_version {p.schema_version}); machine {p.machine_name()}; "
          f"phases {', '.join(p.phases)}; target {t.kind}"
          + (f" {t.what} ({'confirmed' if t.confirmed else 'not confirmed: destructive steps will be refused'})"
             if t.what else ""))
    for w in p.warnings:
        print(f"warning: {p.source_file}: {w}")
    return 0


def _cmd_index(args) -> int:
    from .index import write_index

    if args.render:
        from .execute import render_records

        print(f"re-rendered {len(render_records())} notebook(s) to HTML")
    print(write_index())
    return 0


# ---- aios lab: stepping through in JupyterLab on a session's copy (aios_lib/lab.py) ----
def _register_lab(sub) -> None:
    sp = sub.add_parser(
        "lab", help="JupyterLab on a copy of the phases' notebooks: what you run and save is the run's record",
        description="Prepares a run folder outputs/<machine>/<run-id>-lab/ with a copy of each phase's notebook "
                    "(its parameters cell filled in: params_file, run_dir, plan) and serves JupyterLab there, on "
                    "loopback, without opening a browser; prints the URL with its token and an SSH tunnel line. "
                    "Each save updates the run's run.json, HTML and outputs/index.html; Ctrl-C stops the server "
                    "and closes the record. The notebooks in notebooks/ stay templates.",
        epilog="examples:\n  aios lab --params parameters/default.yaml 01 02\n"
               "  make lab PARAMS=parameters/my-box.yaml PHASES=\"01 02 04\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("phase", nargs="*", help="phase numbers (default: the file's `phases` list)")
    sp.add_argument("--params", "-p", default="parameters/default.yaml", help="parameter file (YAML)")
    sp.add_argument("--run", action="store_true",
                    help="start with plan = False in every copy (default: plan = True, change it per notebook)")
    sp.add_argument("--ip", default="127.0.0.1", help="address to listen on (default %(default)s: loopback only)")
    sp.add_argument("--port", type=int, help="port (default: the first free one from 8888)")
    sp.add_argument("--browser", action="store_true", help="open a browser on this machine")
    sp.add_argument("--prepare-only", action="store_true", help="prepare the session folder, start no server")
    sp.set_defaults(func=_cmd_lab)


def _cmd_lab(args) -> int:
    from .lab import main_lab

    return main_lab(args.params, _phases(args.phase), plan=not args.run, ip=args.ip, port=args.port,
                    open_browser=args.browser, prepare_only=args.prepare_only)


# ---- aios panel: the Neural Control Panel (aios_lib/panel) ----
def _register_panel(sub) -> None:
    sp = sub.add_parser("panel", help="terminal dashboard of a running llama-server (q quit, p pause, +/- interval)",
                        description="The Neural Control Panel: model, tokens/s from /metrics counters, RAM/VRAM "
                                    "split and per-core load of a llama-server started with --metrics.")
    sp.add_argument("--url", default="http://127.0.0.1:8080", help="llama-server base URL (default %(default)s)")
    sp.add_argument("--interval", type=float, default=1.0, help="refresh interval in seconds (default %(default)s)")
    sp.add_argument("--pid", type=int, help="server PID (default: the local process listening on the URL's port)")
    sp.add_argument("--screenshot", metavar="FILE.svg", help="run headless, save an SVG screenshot, exit")
    sp.add_argument("--after", type=float, default=10.0, help="seconds to watch before --screenshot (default %(default)s)")
    sp.set_defaults(func=_cmd_panel)


def _cmd_panel(args) -> int:
    from .panel import run_panel

    return run_panel(args.url, interval=args.interval, pid=args.pid, screenshot=args.screenshot, after=args.after)


# ---- aios bench: the three configurations as ratios with CIs (aios_lib/bench.py) ----
def _register_bench(sub) -> None:
    sp = sub.add_parser("bench", help="Synapse against stock llama.cpp on this machine: the verdict with 95%% CIs",
                        description="Phase 05's measurement on its own (the same library call the notebook makes): "
                                    "stock llama.cpp (as its releases ship it) against Synapse's verified build, "
                                    "flags and host settings, decomposed into build, runtime flags and system, in "
                                    "interleaved rounds until the headline ratio's CI is narrow enough or the budget "
                                    "ends; prints the findings. Run it on an idle machine. With --from, print what a "
                                    "recorded run measured instead.",
                        epilog="Make it shorter or more precise with --budget (seconds of measurement).")
    sp.add_argument("--params", "-p", default="parameters/default.yaml", help="parameter file (YAML)")
    sp.add_argument("--quick", action="store_true", help="tiny sizes and budget (a smoke run, not a measurement)")
    sp.add_argument("--budget", type=int, metavar="SECONDS", help="measurement budget (default: runtime.bench.budget_s)")
    sp.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="print what a recorded run measured")
    sp.set_defaults(func=_cmd_bench)


def bench_lines(results_05: dict) -> list[str]:
    """What ``aios bench`` prints for a phase 05 record: the proof's findings, or the comparison of a
    record made before the proof existed."""
    from .benchmark.compare import summary_lines
    from .measure.experiment import Experiment

    proof = results_05.get("proof")
    if proof:
        return [f"- {f}" for f in proof.get("findings") or []]
    old = results_05.get("three_way")
    return summary_lines(Experiment.from_dict(old) if old else None)


def _register_tune(sub) -> None:
    sp = sub.add_parser("tune", help="search this machine's fastest runtime and host settings; write a tuned profile",
                        description="Phase 08 on its own (the library call notebook 08 makes): coordinate racing over "
                                    "runtime.tune.axes with paired rounds, a confirmation against llama.cpp's "
                                    "defaults (and stock), and a tuned-profile.yaml in the run folder that "
                                    "service.profile can name. Bounded by runtime.tune.budget_s. Run it on an idle "
                                    "machine; `aios run 08` gives the same with the notebook's plots.",
                        epilog="An interrupted tune continues with --resume RUN_DIR (no round is measured twice).")
    sp.add_argument("--params", "-p", default="parameters/default.yaml", help="parameter file (YAML)")
    sp.add_argument("--budget", type=int, metavar="SECONDS", help="time budget (default: runtime.tune.budget_s)")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue the tune recorded in RUN_DIR")
    sp.set_defaults(func=_cmd_tune)


def _cmd_tune(args) -> int:
    from .benchmark import inputs, tune
    from .context import open_run
    from .core.records import new_run_id, run_dir_for
    from .execute import command_record
    from .params import load_params

    params = load_params(args.params)
    if args.budget:
        params.runtime.tune.budget_s = args.budget
    d = args.resume or run_dir_for(params.machine_name(), new_run_id(False, "tune"))
    run = open_run(params, run_dir=d, phase="08")
    # run.json as `aios run` writes it: the tune run is in outputs/index.html, its outcome with it
    with command_record(params, run.dir, "aios tune", "08"):
        rec = tune.tune(run, inputs.inputs(run))
        run.record("tune", rec)
        run.record("findings", tune.findings(rec))
    print("\n".join(f"- {f}" for f in tune.findings(rec)))
    print(f"record: {run.dir}")
    return 0 if not rec.get("planned") else 1


def _cmd_bench(args) -> int:
    from .benchmark.compare import load_run

    if args.from_dir:
        r = load_run(args.from_dir)
        lines, where, ok = bench_lines(r.bench), r.dir, bool(r.bench)
    else:
        from .benchmark import inputs, proof
        from .context import open_run
        from .core.records import new_run_id, run_dir_for
        from .params import load_params

        params = load_params(args.params)
        if args.quick:
            params.runtime.bench.quick = True
            params.runtime.bench.budget_s = 60
        if args.budget:
            params.runtime.bench.budget_s = args.budget
        run = open_run(params, run_dir=run_dir_for(params.machine_name(), new_run_id(False, "bench")), phase="05")
        result = proof.run_all(run, inputs.inputs(run))
        run.record("proof", result.to_dict())
        run.record("chosen", result.record["chosen"])
        run.record("findings", result.findings())
        lines, where, ok = [f"- {f}" for f in result.findings()], run.dir, not result.planned
    print("\n".join(lines))
    print(f"record: {where}")
    return 0 if ok else 1


# ---- aios model check: a GGUF's structure before anything serves it (aios_lib/runtime/model.py) ----
def _register_model(sub) -> None:
    sp = sub.add_parser("model", help="check a GGUF model file before serving it",
                        description="Model files: `aios model check FILE` reads a GGUF's structure (counts, types, "
                                    "data ranges inside the file, aligned and not overlapping, an architecture the "
                                    "pinned llama.cpp supports) without running any binary.")
    actions = sp.add_subparsers(dest="model_action", required=True, metavar="ACTION")
    ck = actions.add_parser("check", help="print a summary and exit 0, or say what is wrong and exit 2")
    ck.add_argument("file", help="the .gguf file")
    ck.add_argument("--params", "-p", default="parameters/default.yaml",
                    help="parameters whose llama.cpp source decides the supported architectures (default %(default)s)")
    ck.set_defaults(func=_cmd_model_check)


def _cmd_model_check(args) -> int:
    from .runtime.model import check_file

    ok, lines = check_file(args.file, args.params)
    print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 2


# ---- aios fleet: the runbook on every host of an Ansible inventory (aios_lib/fleet) ----
FLEET_EPILOG = """\
commands:
  aios fleet plan --inventory fleet.yaml   every command each host would run; none runs, no host contacted
  aios fleet run  --inventory fleet.yaml   install the runbook on each host, `aios run` there, fetch the records

The inventory is an Ansible YAML inventory (all: vars / hosts / children; no host ranges or
plugins). Ansible reads its connection variables (ansible_host, ansible_user, keys). Synapse
reads the `synapse` variable at every level as a parameter file, merged key by key: all.vars,
then each group's vars (parents first), then the host's own; machine.name is the host's name.
Every host is validated before anything runs: a bad value is one line naming the host, the key
and the fix.

  all:
    vars:
      ansible_user: root
      synapse: {schema_version: 1, phases: ["01", "04", "05"]}
    children:
      rack1:
        vars: {synapse: {runtime: {bench: {threads: 8}}}}
        hosts:
          box1: {ansible_host: 192.168.10.11}
          box2: {ansible_host: 192.168.10.12, synapse: {service: {ram_gib: 16}}}

Optional variables (any level): synapse_params_file (a parameter file the `synapse` values
start from), synapse_dir (where the runbook goes on the host, default /opt/synapse),
synapse_python (an interpreter on the host that has Synapse's dependencies; without it the
playbook runs scripts/setup.sh there), synapse_address (the fleet address, default ansible_host).

Records: outputs/<host>/<run-id>/ per host, outputs/fleet/<fleet-id>/ for the fleet (fleet.json
names each host's outcome, the failed step and why; 09_fleet.html is the report). A failing or
unreachable host does not stop the others.

exit status: 0 every host ran its phases (plan: every host's commands listed);
  1 some host failed or was unreachable: the others ran to the end and their records are
    complete; each host's line of the output (and fleet.json) says its failed step and why,
    and a last line on stderr names the failed hosts;
  2 the inventory is invalid: nothing ran.
"""


def _register_fleet(sub) -> None:
    sp = sub.add_parser("fleet", help="the runbook on every host of an Ansible inventory, one record per host",
                        description="Run (or plan) the phases on every host of an inventory with Ansible over SSH: "
                                    "the runbook is installed on each host, `aios run` (papermill) runs there, and "
                                    "each host's run folder comes back to outputs/<host>/<run-id>/. Then the fleet "
                                    "report (notebook 09) is written into the fleet record.",
                        epilog=FLEET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = sp.add_subparsers(dest="fleet_action", required=True, metavar="ACTION")
    for action, helptext, description in [
        ("run", "run the runbook on every host and fetch the records",
         "Over SSH (Ansible), on every host at once: install the runbook and the host's parameter file, run "
         "`aios run` (papermill) there, and, whatever happened, fetch the host's run folder into "
         "outputs/<host>/<run-id>/; then write the fleet record and its report."),
        ("plan", "list every command each host would run; contact no host, change nothing",
         "Validate every host's parameters, write the fleet record (parameter files, playbook) and list every "
         "command the playbook amounts to on each host, journaled as planned. Only local checks run "
         "(Ansible reading the inventory, the playbook's syntax); no host is contacted.")]:
        ap = actions.add_parser(action, help=helptext, description=description, epilog=FLEET_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--inventory", "-i", required=True, metavar="FILE", help="Ansible YAML inventory (see below)")
        ap.add_argument("--no-report", action="store_true", help="do not write the fleet report notebook (09)")
        if action == "run":
            ap.add_argument("--timeout", type=int, default=6 * 3600, metavar="SECONDS",
                            help="stop the playbook after this long; hosts not finished count as failed "
                                 "(default %(default)s)")
        ap.set_defaults(func=_cmd_fleet)


def _cmd_fleet(args) -> int:
    from .fleet.run import run_fleet

    plan = args.fleet_action == "plan"
    fr = run_fleet(args.inventory, plan=plan, timeout=getattr(args, "timeout", 6 * 3600))
    print("\n".join(fr.lines()))
    if not args.no_report:
        from .execute import run_fleet_report

        report = run_fleet_report(fr.dir, plan=plan)
        print(f"report: {report}")
    print(f"fleet record: {fr.dir}")
    if plan:
        n = sum(1 for h in fr.hosts for c in h.commands if not c["skipped"])
        print(f"plan: {n} command(s) on {len(fr.hosts)} host(s) would run; none ran, no host was contacted")
    if not fr.ok:
        # the exit status says "some host failed"; this line says which (fleet.json says why)
        print(f"aios: {len(fr.failed)} of {len(fr.hosts)} host(s) did not finish: "
              + ", ".join(f"{h.name} ({h.status})" for h in fr.failed), file=sys.stderr)
    return 0 if fr.ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aios", description="Synapse: the runbook that builds and measures Synapse OS.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, helptext in [("run", "execute phases and record everything"),
                           ("plan", "execute phases in plan mode: list every changing command, run none")]:
        sp = sub.add_parser(verb, help=helptext, description=helptext, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("phase", nargs="*", help="phase numbers (default: the file's `phases` list)")
        sp.add_argument("--params", "-p", help="parameter file (YAML; default parameters/default.yaml)")
        sp.add_argument("--label", help="appended to the run id, e.g. stock or aios")
        sp.add_argument("--quiet", "-q", action="store_true", help="do not echo cell output while running")
        sp.add_argument("--resume", metavar="RUN_DIR", help=RESUME_HELP)
    _register_lab(sub)
    sp = sub.add_parser("check", help="validate a parameter file")
    sp.add_argument("file")
    sp = sub.add_parser("index", help="rewrite outputs/index.html")
    sp.add_argument("--render", action="store_true",
                    help="first re-render every record's HTML from its executed notebook (e.g. after an nbconvert upgrade)")
    _register_panel(sub)
    _register_bench(sub)
    _register_tune(sub)
    _register_model(sub)
    _register_fleet(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        if args.verb in ("run", "plan"):
            return _cmd_run(args, plan=args.verb == "plan")
        if args.verb == "check":
            return _cmd_check(args)
        if args.verb == "index":
            return _cmd_index(args)
        return args.func(args)
    except ParamsError as e:
        print(f"aios: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aios: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
