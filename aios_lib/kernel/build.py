"""Phase 3: the kernel build, cached by its configuration, with progress from Kbuild's output.

source (:mod:`.source`) -> configuration (:mod:`.config`) -> build (here) -> install into a
target (:mod:`.install`) -> boot and read the configuration back (:mod:`.boot_check`). Every
command goes through the run's runner; the pure parts (``.config`` parsing, Kconfig symbols,
the analysis) are in :mod:`aios_lib.kernel.kconfig`.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from . import kconfig
from ..core import cache
from ..core.paths import cache_dir
from ..facts import gather, kernel_tree, toolchain
from ..runtime.cpus import build_jobs
from .config import ConfigResult
from .source import _make


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
_KBUILD = re.compile(r"^\s+(CC \[M\]|AS \[M\]|LD \[M\]|CC|AS|AR|LD|HOSTCC|RUSTC)\s+(\S+)")


class KbuildProgress:
    """Counts objects in kbuild's ``  CC      kernel/fork.o`` lines against an estimate.

    Call it with each output line (the runner does); it returns the fraction done (capped below
    1 until the build ends) so the progress line shows percent and time left.
    """

    def __init__(self, estimate: int):
        self.estimate = max(int(estimate), 1)
        self.objects = 0
        self.started = time.time()
        self.last = ""

    def __call__(self, line: str) -> float | None:
        m = _KBUILD.match(line)
        if not m:
            return None
        if m.group(1).startswith(("CC", "AS")):
            self.objects += 1
            self.last = m.group(2)
        return min(self.objects / self.estimate, 0.99)

    def status(self) -> str:
        el = time.time() - self.started
        frac = min(self.objects / self.estimate, 0.99)
        left = el / frac - el if frac > 0.02 else None
        return (f"{self.objects}/{self.estimate} objects, {el:.0f}s elapsed"
                + (f", ~{left:.0f}s left" if left is not None else ""))


def estimate_objects(cfg: dict[str, str], previous: int | None = None) -> int:
    """Objects a build will compile: the previous build's count, else a rule of thumb from the
    .config (measured: 6.12 tinyconfig + minimum + table, 603 symbols =y, compiled 1043 objects)."""
    if previous:
        return previous
    c = kconfig.count_config(cfg)
    return int(1.73 * c["y"] + 1.5 * c["m"])


@dataclass
class BuildResult:
    key: str
    dir: Path
    target: str
    image: Path
    cached: bool
    planned: bool = False
    objects: int | None = None
    seconds: float | None = None
    release: str | None = None
    command: str = ""

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"**build planned, not run** (key `{self.key}`)\n\n```\n$ {self.command}\n```"
        how = "from the cache" if self.cached else f"built in {self.seconds:.0f}s, {self.objects} objects compiled"
        return (f"**kernel {self.release}** {self.target} {how}\n\n`{self.image}` "
                f"({self.image.stat().st_size / 1e6:.1f} MB)" if self.image.exists() else f"missing {self.image}")


def compiler_version(run) -> str:
    """``gcc -dumpfullversion`` (``unknown``/``none`` when it says nothing or is missing): the key hashes it."""
    return gather(run.runner, toolchain.full_version("gcc"))


def _read_stats(path: Path) -> dict:
    """Objects counted by earlier builds ({} when there is no readable file)."""
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def build(run, cfg: ConfigResult, target: str | None = None) -> BuildResult:
    """Build the configured kernel; cached by source + final .config + compiler + target."""
    k = run.params.kernel
    target = target or k.build_target
    gcc = compiler_version(run)
    chash = cfg.config_hash or "planned"
    key = hashlib.sha256(f"{cfg.source.key}|{chash}|{gcc}|{target}".encode()).hexdigest()[:16]
    # an interrupted build's folder is kept: make resumes it; only the marker says it is whole
    entry = cache.Entry("kernel-build", f"{cfg.source.version}-{key}")
    bdir = entry.path
    image = bdir / "arch/x86/boot/bzImage"
    make_targets = {"bzImage": ["bzImage"], "all": ["all"], "bindeb-pkg": ["bindeb-pkg"]}[target]
    argv = _make(cfg.source, bdir, *make_targets,
                 extra=[f"-j{build_jobs(run, k.jobs)}", f"LOCALVERSION={k.localversion}"])
    if cfg.planned or run.plan:
        r = run.runner.work(argv, note="build (planned)")
        return BuildResult(key, bdir, target, image, False, planned=True, command=r.cmdline)
    with entry.lock():  # two sessions never build into one folder at once
        return _build(run, k, cfg, target, gcc, chash, key, entry, bdir, image, argv)


def _build(run, k, cfg: ConfigResult, target: str, gcc: str, chash: str, key: str, entry, bdir: Path, image: Path,
           argv: list[str]) -> BuildResult:
    if entry.complete() and image.exists():
        info = entry.info()
        return BuildResult(key, bdir, target, image, True, objects=info.get("objects"), seconds=info.get("seconds"),
                           release=info.get("release"), command=info.get("command", ""))
    if not entry.complete() and (bdir / "Makefile").exists():
        run.runner.note(f"kernel build {entry.name}: an interrupted build left {bdir} (no completion marker); "
                        "make continues it and redoes what did not finish")
    bdir.mkdir(parents=True, exist_ok=True)
    # the final .config of the config step is this build's input; written only when it differs, so
    # make does not take a continued build's .config for a new one
    final = cfg.config_path.read_bytes()
    if not (bdir / ".config").is_file() or (bdir / ".config").read_bytes() != final:
        run.runner.write_file(bdir / ".config", final, note="the final .config")
    stats = cache_dir("kernel-stats") / "objects.json"
    prev = _read_stats(stats)
    skey = f"{cfg.source.version}|{cfg.base}|{target}"
    progress = KbuildProgress(estimate_objects(cfg.final_config, prev.get(skey)))
    t0 = time.time()
    r = run.runner.work(argv, progress=progress, timeout=k.build_timeout_s, note="kernel build")
    seconds = time.time() - t0
    rel = gather(run.runner, kernel_tree.kernelrelease(
        _make(cfg.source, bdir, "-s", "kernelrelease", extra=[f"LOCALVERSION={k.localversion}"])))
    prev[skey] = progress.objects
    tmp = stats.with_name(stats.name + ".tmp")
    tmp.write_text(json.dumps(prev, indent=1))
    tmp.replace(stats)
    info = {"objects": progress.objects, "seconds": round(seconds, 1), "release": rel, "command": r.cmdline,
            "gcc": gcc, "config_hash": chash, "source": cfg.source.key}
    entry.mark_complete(info)
    return BuildResult(key, bdir, target, image, False, objects=progress.objects, seconds=round(seconds, 1),
                       release=rel, command=r.cmdline)
