"""Facts about a machine: one module per subject, each a command plus a pure parse function."""
from .base import Fact, gather

__all__ = ["Fact", "gather"]
