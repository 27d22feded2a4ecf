"""The Neural Control Panel: a Textual terminal dashboard of a running llama-server.

``aios panel --url http://127.0.0.1:8080`` (see :func:`aios_lib.panel.app.run_panel`).
``metrics`` parses /metrics and computes token rates (pure); ``sources`` reads the server,
/proc, /sys, psutil and nvidia-smi; ``app`` draws them.
"""
from __future__ import annotations


def run_panel(*args, **kw):
    from .app import run_panel as _run

    return _run(*args, **kw)
