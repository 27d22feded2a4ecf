"""Verbs beyond run/plan/check/index. Each adds a subparser and sets ``func``."""
from __future__ import annotations


def register(sub) -> None:
    """Called by cli.build_parser(); each phase module that offers a verb registers it here."""
    return None
