"""journald limits as a drop-in (the blueprint edits journald.conf itself; a drop-in survives upgrades)."""
from __future__ import annotations

from ._conf import host_path, parse_kv, read_text
from .base import Setting

PATH = "/etc/systemd/journald.conf.d/90-synapse.conf"


class Journald(Setting):
    def __init__(self, values: dict):
        self.desired = {k: str(v) for k, v in values.items()}
        self.name = "journald"
        self.note = PATH

    def read(self, runner, root):
        vals = parse_kv(read_text(runner, root, PATH), section="Journal")
        return {k: vals.get(k) for k in self.desired} if vals else None

    def render(self) -> str:
        """The drop-in's text."""
        return "# Synapse: logs in RAM only, capped (system.journald)\n[Journal]\n" + "".join(
            f"{k}={v}\n" for k, v in self.desired.items())

    def apply(self, runner, root):
        runner.write_file(host_path(root, PATH), self.render(), note=self.name)
