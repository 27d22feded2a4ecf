"""Verbs beyond run/plan/check/index. Each adds a subparser and sets ``func``."""
from __future__ import annotations


def register(sub) -> None:
    """Called by cli.build_parser(); each phase module that offers a verb registers it here."""
    _register_panel(sub)
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
