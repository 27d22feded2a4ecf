"""sysctl values: a drop-in under /etc/sysctl.d (root) or the running kernel's values (live)."""
from __future__ import annotations


from ..facts import gather, sysctl
from ._conf import host_path, parse_kv, read_text
from .base import Setting

PATH = "/etc/sysctl.d/90-synapse.conf"


def render(values: dict) -> str:
    lines = ["# Synapse: written by the base-system phase from parameters (system.sysctl)"]
    lines += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


class Sysctl(Setting):
    """``values`` ({name: value}) in ``/etc/sysctl.d/90-synapse.conf``; live: ``sysctl -w``."""

    def __init__(self, values: dict, path: str = PATH):
        self.desired = {k: str(v) for k, v in values.items()}
        self.path = path
        self.name = f"sysctl ({path})"
        self.note = ", ".join(f"{k}={v}" for k, v in self.desired.items())

    def read(self, runner, root):
        if root is None:
            return {k: gather(runner, sysctl.value(k)) for k in self.desired}
        vals = parse_kv(read_text(runner, root, self.path))
        return {k: vals.get(k) for k in self.desired} if vals else None

    def apply(self, runner, root):
        runner.write_file(host_path(root, self.path), render(self.desired), note=self.name)
        if root is None:
            runner.change(["sysctl", "-p", self.path])

    def matches(self, actual):
        return actual == self.desired
