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
  05 benchmark         llama-bench with statistics, thread sweep, jitter, roofline
  06 hardening         the inference service, read-only root, the distributable image
  07 compare           runs side by side with confidence intervals

examples:
  aios plan --params parameters/default.yaml      list every command, change nothing
  aios run --params parameters/default.yaml       survey, build and benchmark this machine
  aios run 02 --params parameters/my-box.yaml     only the base-system phase
  aios check parameters/my-box.yaml               validate a parameter file

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


def _cmd_run(args, plan: bool) -> int:
    from .execute import run_phases

    outcome = run_phases(args.params, _phases(args.phase), plan=plan, label=args.label or "",
                         log_output=not args.quiet)
    for p in outcome.phases:
        line = f"{p.phase} {p.notebook or '-'}: {p.status} ({p.seconds:.0f}s)"
        print(line + (f"\n   {p.error}" if p.error else ""))
    print(f"record: {outcome.run_dir}")
    if plan:
        from .journal import read_journal

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
    return 0


def _cmd_index(args) -> int:
    from .index import write_index

    print(write_index())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aios", description="Synapse: the runbook that builds and measures Synapse OS.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, helptext in [("run", "execute phases and record everything"),
                           ("plan", "execute phases in plan mode: list every changing command, run none")]:
        sp = sub.add_parser(verb, help=helptext, description=helptext, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("phase", nargs="*", help="phase numbers (default: the file's `phases` list)")
        sp.add_argument("--params", "-p", default="parameters/default.yaml", help="parameter file (YAML)")
        sp.add_argument("--label", help="appended to the run id, e.g. stock or aios")
        sp.add_argument("--quiet", "-q", action="store_true", help="do not echo cell output while running")
    sp = sub.add_parser("check", help="validate a parameter file")
    sp.add_argument("file")
    sub.add_parser("index", help="rewrite outputs/index.html")
    from . import cli_extra

    cli_extra.register(sub)
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
