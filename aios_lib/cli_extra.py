"""Verbs beyond run/plan/check/index. Each adds a subparser and sets ``func``."""
from __future__ import annotations


def register(sub) -> None:
    """Called by cli.build_parser(); each phase module that offers a verb registers it here."""
    _register_panel(sub)
    _register_bench(sub)
    return None


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
    sp = sub.add_parser("bench", help="measure the blueprint's command, llama.cpp's defaults and the runbook's "
                                      "choice; print tg and pp as ratios with 95%% CIs",
                        description="A benchmark of the project itself: thread sweep and flash-attention A/B choose "
                                    "the runbook's configuration, then the three configurations run interleaved. "
                                    "With --from, only print what a recorded run measured.")
    sp.add_argument("--params", "-p", default="parameters/default.yaml", help="parameter file (YAML)")
    sp.add_argument("--quick", action="store_true", help="small tests (-p 64 -n 16 -r 2, 2 rounds)")
    sp.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="print a recorded run's three-way result")
    sp.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from .bench import project_benchmark
    from .compare import load_run, summary_lines

    if args.from_dir:
        r = load_run(args.from_dir)
        ex, chosen = r.experiment("three_way"), r.bench.get("chosen")
        where = r.dir
    else:
        run, ex, chosen = project_benchmark(args.params, quick=args.quick)
        where = run.dir
    if chosen:
        print(f"runbook's choice: -t {chosen['threads']} {' '.join(f'{k} {v}' for k, v in chosen.get('flags', {}).items())}"
              f"  ({'; '.join(chosen.get('why', []))})")
    if ex is not None:
        for c in ex.configs:
            print(f"  {c['label']:>10}: {c.get('shown', '')}")
    print("\n".join(summary_lines(ex)))
    print(f"record: {where}")
    return 0 if ex is not None and not ex.planned else 1
