"""Installs the service into a target root: the llama.cpp bin folder, the service user, the
verified model with its hash and the unit, enabled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from .units import Unit


# ---- installing into a system tree -------------------------------------------------------------------
@dataclass
class Installed:
    unit: str
    binary_dir: str
    model: str
    user: str
    files: int

    def _repr_markdown_(self) -> str:
        return (f"installed `{self.unit}` (enabled): llama.cpp in `{self.binary_dir}` ({self.files} files), "
                f"model `{self.model}` (+ pinned `.sha256`), user `{self.user}`")


def install(run, root: Path, bin_dir: Path, model_file: Path, sha256: str, unit: Unit) -> Installed:
    """Install llama.cpp's bin folder, the service user, the verified model and the unit into
    ``root`` (a mounted image; ``<root>/<data_dir>`` should be the data partition, mounted)."""
    sp = run.params.service
    r = run.runner
    root = Path(root)
    dest = root / sp.install_dir.lstrip("/")
    r.change(["mkdir", "-p", str(dest)])
    r.change(["cp", "-a", f"{bin_dir}/.", str(dest)], note="llama.cpp launcher + lib*.so")
    r.change(["chown", "-R", "root:root", str(dest)])
    have = r.probe(["grep", "-q", f"^{sp.user}:", str(root / "etc/passwd")], check=False, quiet=True)
    if have.rc != 0:
        r.change(["useradd", "--root", str(root), "--system", "--user-group", "--no-create-home",
                  "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", sp.user],
                 note="dedicated service user")
    models = root / sp.data_dir.lstrip("/") / "models"
    r.change(["install", "-d", "-m", "0755", str(models)])
    target = f"{sp.data_dir}/models/{Path(model_file).name}"
    r.change(["install", "-m", "0644", str(model_file), str(models / Path(model_file).name)],
             note="the verified model onto the data partition")
    r.write_file(models / (Path(model_file).name + ".sha256"), f"{sha256}  {target}\n", mode=0o644,
                 note="pinned hash, checked by ExecStartPre at every start")
    r.write_file(root / "etc/systemd/system" / unit.name, unit.text, mode=0o644, note="inference service")
    r.change(["systemctl", f"--root={root}", "enable", unit.name])
    n = len(list(Path(bin_dir).iterdir())) if Path(bin_dir).exists() else 0
    return Installed(unit.name, sp.install_dir, target, sp.user, n)
