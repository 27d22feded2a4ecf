"""Phase 3: the kernel source tree (Debian's linux-source packages, or git), and the make
invocation every step uses.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from . import kconfig
from ..core import cache
from ..facts import gather, packages


ARCH = "x86"


class KernelError(RuntimeError):
    """A kernel step cannot go on; the message names the fix."""

# ---------------------------------------------------------------------------------------------
# source
# ---------------------------------------------------------------------------------------------
@dataclass
class KernelSource:
    kind: str
    version: str  # the series asked for, e.g. 6.12
    key: str  # cache key (package version or git ref)
    tree: Path
    release: tuple[int, int, int] | None = None  # from the tree's Makefile
    planned: bool = False
    commands: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return (self.tree / "Makefile").exists() and (self.tree.parent / cache.MARKER).exists()

    def _repr_markdown_(self) -> str:
        state = "ready" if self.ready else ("planned (not extracted yet)" if self.planned else "missing")
        rel = ".".join(map(str, self.release)) if self.release else "?"
        cmds = "\n".join(f"$ {c}" for c in self.commands)
        return (f"**kernel source** {self.kind} {self.version} ({self.key}): Linux {rel}, {state}\n\n"
                f"`{self.tree}`" + (f"\n\n```\n{cmds}\n```" if cmds else ""))


def _pkg_version(run, package: str) -> str | None:
    return gather(run.runner, packages.package_version(package))


def source_tree(run) -> KernelSource:
    """Extract (once, into the cache) the kernel source the parameters name."""
    k = run.params.kernel
    runner = run.runner
    if k.source == "debian-package":
        pkg = f"linux-source-{k.version}"
        tarball = Path(f"/usr/src/{pkg}.tar.xz")
        pv = _pkg_version(run, pkg)
        if pv is None or not tarball.exists():
            runner.change(["apt-get", "install", "-y", "--no-install-recommends", pkg],
                          note=f"Debian's kernel source {k.version}")
            pv = _pkg_version(run, pkg) or "planned"
        key = f"{k.version}-{pv}".replace(":", "_")
        entry = cache.Entry("kernel-src", key)
        top = entry.path
        src = KernelSource("debian-package", k.version, key, top / pkg, planned=run.plan)
        with entry.lock(run.plan):
            if not src.ready:
                if not run.plan:
                    entry.discard_incomplete(runner)  # a half-extracted tree of an interrupted run
                    top.mkdir(parents=True, exist_ok=True)
                r = runner.work(["tar", "-xf", str(tarball), "-C", str(top)], note="extract once into the cache",
                                timeout=1800)
                src.commands.append(r.cmdline)
                if not r.planned:
                    entry.mark_complete({"package": pkg, "version": pv})
    elif k.source == "git":
        key = f"git-{k.git_ref}"
        entry = cache.Entry("kernel-src", key)
        top = entry.path
        src = KernelSource("git", k.version, key, top / "linux", planned=run.plan)
        with entry.lock(run.plan):
            if not src.ready:
                if not run.plan:
                    entry.discard_incomplete(runner)  # a half-cloned tree of an interrupted run
                    top.mkdir(parents=True, exist_ok=True)
                r = runner.work(["git", "clone", "--depth=1", "--branch", k.git_ref, k.git_url, str(src.tree)],
                                timeout=3600, note="a stable tag, shallow")
                src.commands.append(r.cmdline)
                if not r.planned:
                    entry.mark_complete({"git_ref": k.git_ref})
    else:  # linux-tkg: Arch's makepkg flow; planned and documented, not run here
        top = cache.Entry("kernel-src", "linux-tkg").path
        src = KernelSource("linux-tkg", k.version, "linux-tkg", top / "linux-tkg", planned=True)
        for argv in (["git", "clone", "--depth=1", k.tkg_url, str(src.tree)],
                     ["makepkg", "-si"]):
            runner.change(argv, cwd=str(src.tree), note="linux-tkg (Arch): set _timer_freq=300 _tickless=1 "
                          "_numadisable=true in customization.cfg; it forces PREEMPT, so add a *.myfrag fragment "
                          "with the table (_config_fragments=true)")
            src.commands.append(shlex.join(argv))
        return src
    if (src.tree / "Makefile").exists():
        src.release = kconfig.tree_version((src.tree / "Makefile").read_text(errors="replace")[:2000])
    return src


def _make(src: KernelSource, build: Path, *targets: str, extra: list[str] | None = None) -> list[str]:
    return ["make", "-C", str(src.tree), f"O={build}", f"ARCH={ARCH}", *(extra or []), *targets]


def _fragment_file(src: KernelSource, name: str) -> Path | None:
    for d in ("kernel/configs", f"arch/{ARCH}/configs"):
        p = src.tree / d / name
        if p.exists():
            return p
    return None
