"""Synapse: the library behind the runbook notebooks."""
from .context import Run, open_run
from .params import Params, ParamsError, load_params
from .core.runner import CommandFailed, CommandResult, DestructiveRefused, Runner

__all__ = ["Run", "open_run", "Params", "ParamsError", "load_params", "Runner", "CommandResult",
           "CommandFailed", "DestructiveRefused"]
__version__ = "0.1.0"
