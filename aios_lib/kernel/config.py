"""Phase 3: the kernel configuration: a starting config, ``localmodconfig`` from a module list
captured on the target, the blueprint's table as a fragment merged with the kernel's own
``merge_config.sh``, ``olddefconfig``, and requested vs resulting with the reason for each row.
"""
from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from . import kconfig
from ..core import cache
from ..core.paths import cache_dir, resolve_in_project
from ..facts import gather, kernel_tree
from .source import ARCH, KernelError, KernelSource, _fragment_file, _make, source_tree


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class ConfigResult:
    source: KernelSource
    base: str
    build_dir: Path
    fragment: str
    table: list[kconfig.TableRow]
    rows: list[kconfig.ResultRow] = field(default_factory=list)
    base_config: dict[str, str] = field(default_factory=dict)
    final_config: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    modules_kept: int | None = None
    commands: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    planned: bool = False
    seconds: float = 0.0

    @property
    def config_path(self) -> Path:
        return self.build_dir / ".config"

    @property
    def config_hash(self) -> str | None:
        p = self.config_path
        return cache.file_sha256(p)[:16] if p.exists() and not self.planned else None

    def table_df(self):
        return kconfig.rows_table(self.rows)

    def __repr__(self) -> str:
        if self.planned or not self.rows:
            return f"ConfigResult({self.base}, planned, {len(self.commands)} commands)"
        return (f"ConfigResult({self.base}, {sum(r.stuck for r in self.rows)}/{len(self.rows)} rows stuck, "
                f"unknown={self.unknown}, {self.build_dir})")

    def summary(self) -> dict:
        return {"base": self.base, "release": ".".join(map(str, self.source.release or ())),
                "stuck": sum(r.stuck for r in self.rows), "rows": len(self.rows), "unknown": self.unknown,
                "config_hash": self.config_hash, "counts": kconfig.count_config(self.final_config)
                if self.final_config else None, "build_dir": str(self.build_dir)}

    def _repr_html_(self) -> str:
        import html as _html

        warn = "".join(f"<p><b>warning:</b> {_html.escape(w)}</p>" for w in self.warnings)
        head = warn + (f"<p><b>{self.base}</b> on Linux {'.'.join(map(str, self.source.release or ())) or self.source.version}"
                f" &middot; build dir <code>{self.build_dir}</code></p>")
        if self.planned or not self.rows:
            cmds = "\n".join(f"$ {c}" for c in self.commands)
            return head + ("<p>planned, not run: the requested-vs-resulting table appears when it runs.</p>"
                           f"<pre>{_html.escape(cmds)}</pre><p>fragment:</p><pre>{_html.escape(self.fragment)}</pre>")
        stuck = sum(r.stuck for r in self.rows)
        return (head + f"<p>{stuck} of {len(self.rows)} rows stuck; Kconfig's unknown-symbol warnings: "
                f"{', '.join(self.unknown) or 'none'}"
                + (f"; choice overrides it warned about: {', '.join(self.overrides)}" if self.overrides else "")
                + f" ({self.seconds:.0f}s)</p>" + self.table_df().to_html(index=False))


def read_modules_list(path: str | os.PathLike | None) -> list[str]:
    """Module names in an ``lsmod`` output file; refuses a missing or empty list.

    ``make localmodconfig`` with an empty list turns every module off (=m 3852 -> 1 on Debian's
    config), which leaves a kernel that cannot see its own disks.
    """
    fix = ("run `lsmod > lsmod.txt` on the target machine (with all its hardware attached and in use), "
           "copy the file here and set kernel.lsmod_file to it")
    if not path:
        raise KernelError(f"localmodconfig refused: no module list given; {fix}")
    p = resolve_in_project(path)
    if not p.exists():
        raise KernelError(f"localmodconfig refused: module list {p} does not exist; {fix}")
    mods = []
    for line in p.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts or parts[0] == "Module":
            continue
        if re.fullmatch(r"[A-Za-z0-9_]+", parts[0]):
            mods.append(parts[0])
    if not mods:
        raise KernelError(f"localmodconfig refused: module list {p} names no modules (it would strip every "
                          f"module); {fix}")
    return mods


def _write_base(run, cfg: Path, text: str | None, note: str) -> None:
    """The base config into the build folder. A real run got the text or stopped at the read; a
    plan lists the write when the read succeeded."""
    if text is not None:
        run.runner.write_file(cfg, text, note=note)


def configure(run, src: KernelSource | None = None, *, base: str | None = None,
              options: dict[str, str] | None = None, resolve: bool | None = None,
              label: str | None = None) -> ConfigResult:
    """Starting config, localmodconfig, the table merged as a fragment, olddefconfig, and the
    requested-vs-resulting table. ``base``/``options``/``resolve`` override the parameters."""
    k = run.params.kernel
    runner = run.runner
    src = src or source_tree(run)
    base = base or k.base_config
    options = dict(k.options if options is None else options)
    resolve = k.resolve if resolve is None else resolve
    t0 = time.time()

    index = kconfig.load_kconfig(src.tree, ARCH) if src.ready else None
    table = kconfig.resolve_table(options, index, resolve=resolve, version=src.release)
    frag = kconfig.fragment_text(table)
    lsmod_mods: list[str] = []
    warnings: list[str] = []
    if k.localmodconfig:
        try:
            lsmod_mods = read_modules_list(k.lsmod_file)  # refuse before anything runs
        except KernelError as e:
            if not run.plan:
                raise
            warnings.append(f"{e} (plan mode: shown, not refused yet)")
    inputs = {"src": src.key, "base": base, "minimum": k.minimum if base == "tinyconfig" else [],
              "extra": k.extra_fragments, "frag": frag, "flavour": k.distro_flavour if base == "distro" else "",
              "file": k.base_config_file if base == "file" else "", "lsmod": sorted(lsmod_mods),
              "keep": sorted(k.keep_modules) if k.localmodconfig else [],
              "localversion": k.localversion}
    key = cache.key(inputs, 12)
    build = cache_dir("kernel-config", f"{src.version}-{label or base}-{key}")
    res = ConfigResult(src, base, build, frag, table, planned=run.plan or not src.ready, warnings=warnings)

    def do(argv, **kw):
        r = runner.work(argv, **kw)
        res.commands.append(r.cmdline)
        return r

    # 1. the starting config
    cfg = build / ".config"
    if base in ("tinyconfig", "defconfig"):
        do(_make(src, build, base))
    elif base == "distro":
        xz = Path(f"/usr/src/linux-config-{src.version}/config.{k.distro_flavour}.xz")
        if not xz.exists():
            runner.change(["apt-get", "install", "-y", "--no-install-recommends", f"linux-config-{src.version}"])
        fact = kernel_tree.distro_config(xz, required=not run.plan)
        res.commands.append(shlex.join(fact.commands["text"]) + f" > {cfg}")
        _write_base(run, cfg, gather(runner, fact), "Debian's config")
    elif base == "running":
        fact = kernel_tree.running_config(required=not run.plan)
        res.commands.append(shlex.join(fact.commands["text"]) + f" > {cfg}")
        _write_base(run, cfg, gather(runner, fact), "the running kernel's config")
    else:
        p = resolve_in_project(k.base_config_file)
        text = gather(runner, kernel_tree.config_file(p, required=not run.plan))
        res.commands.append(f"cp {p} {cfg}")
        _write_base(run, cfg, text, "base config file")
    if base in ("distro", "running", "file"):
        # a distro config names signing keys that are not here; Debian's build would look for them
        do([str(src.tree / "scripts/config"), "--file", str(cfg), "--set-str", "SYSTEM_TRUSTED_KEYS", "",
            "--set-str", "SYSTEM_REVOCATION_KEYS", "", "--set-str", "LOCALVERSION", ""])
        do(_make(src, build, "olddefconfig"))
    res.base_config = kconfig.parse_config(cfg.read_text()) if cfg.exists() and not res.planned else {}

    # 2. localmodconfig, before the table (it would otherwise strip what the table turned on)
    if k.localmodconfig:
        lsmod = resolve_in_project(k.lsmod_file)
        if k.keep_modules:  # needed by the target but not loaded when the list was captured
            lsmod = build / "synapse-lsmod.txt"
            src_list = resolve_in_project(k.lsmod_file)
            text = src_list.read_text(errors="replace") if src_list.exists() else ""
            runner.write_file(lsmod, text.rstrip("\n") + "\n" + "".join(f"{m} 0 0\n" for m in k.keep_modules),
                              note="the captured list plus kernel.keep_modules")
        r = do(_make(src, build, "localmodconfig", extra=[f"LSMOD={lsmod}"]), input="\n" * 20000)
        if not r.planned:
            after = kconfig.parse_config(cfg.read_text())
            res.modules_kept = sum(1 for v in after.values() if v == "m")

    # 3. fragments: the minimum (tinyconfig), extra fragments, the table last so it wins
    frags = []
    if base == "tinyconfig" and k.minimum:
        mp = build / "synapse-minimum.config"
        runner.write_file(mp, kconfig.minimum_fragment(k.minimum))
        frags.append(mp)
    for name in k.extra_fragments:
        p = _fragment_file(src, name)
        if p is None and src.ready:
            raise KernelError(f"kernel.extra_fragments: {name} is in neither kernel/configs nor arch/{ARCH}/configs "
                              f"of {src.tree}")
        frags.append(p or src.tree / "kernel/configs" / name)
    tp = build / "synapse-table.config"
    runner.write_file(tp, frag, note="the table as a config fragment")
    frags.append(tp)
    do([str(src.tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(cfg), *map(str, frags)],
       cwd=str(src.tree))
    r = do(_make(src, build, "olddefconfig"), env={"KCONFIG_WARN_UNKNOWN_SYMBOLS": "1"})
    if not r.planned:
        out = r.stdout + "\n" + r.stderr
        res.unknown = kconfig.unknown_symbols(out)
        res.overrides = kconfig.choice_overrides(out)
        res.final_config = kconfig.parse_config(cfg.read_text())
        res.rows = kconfig.analyze(table, res.base_config, res.final_config, index, res.unknown, src.release)
        res.planned = False
    res.seconds = round(time.time() - t0, 1)
    return res
