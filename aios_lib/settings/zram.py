"""zram swap through zram-generator (``zram-size = ram``; ``zram-fraction`` is deprecated)."""
from __future__ import annotations

from ._conf import host_path, parse_kv, read_text
from .base import Setting

PATH = "/etc/systemd/zram-generator.conf"


def render(size: str, algorithm: str, priority: int = 100) -> str:
    return ("# Synapse: compressed swap in RAM (system.zram_size, system.zram_algorithm)\n"
            f"[zram0]\nzram-size = {size}\ncompression-algorithm = {algorithm}\nswap-priority = {priority}\n")


class ZramGenerator(Setting):
    def __init__(self, size: str = "ram", algorithm: str = "zstd", priority: int = 100):
        self.desired = {"zram-size": size, "compression-algorithm": algorithm, "swap-priority": str(priority)}
        self.name = "zram swap (zram-generator)"
        self.note = PATH

    def read(self, runner, root):
        vals = parse_kv(read_text(runner, root, PATH), section="zram0")
        return {k: vals.get(k) for k in self.desired} if vals else None

    def apply(self, runner, root):
        d = self.desired
        runner.write_file(host_path(root, PATH), render(d["zram-size"], d["compression-algorithm"],
                                                        int(d["swap-priority"])), note=self.name)
