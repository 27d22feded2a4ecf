"""Phase 3: the custom kernel.

source -> starting config -> (localmodconfig) -> the table as a fragment (merge_config.sh) ->
olddefconfig -> requested vs resulting -> build (cached, with progress) -> install + boot entry.

Every command goes through the run's runner; the pure parts (``.config`` parsing, Kconfig
symbols, the analysis) are in :mod:`aios_lib.kconfig`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import kconfig
from .paths import cache_dir, resolve_in_project

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
        return (self.tree / "Makefile").exists() and (self.tree.parent / ".complete").exists()

    def _repr_markdown_(self) -> str:
        state = "ready" if self.ready else ("planned (not extracted yet)" if self.planned else "missing")
        rel = ".".join(map(str, self.release)) if self.release else "?"
        cmds = "\n".join(f"$ {c}" for c in self.commands)
        return (f"**kernel source** {self.kind} {self.version} ({self.key}): Linux {rel}, {state}\n\n"
                f"`{self.tree}`" + (f"\n\n```\n{cmds}\n```" if cmds else ""))


def _pkg_version(run, package: str) -> str | None:
    r = run.runner.probe(["dpkg-query", "-W", "-f=${Status} ${Version}", package], check=False, quiet=True)
    if r.rc == 0 and "ok installed" in r.stdout:
        return r.stdout.split()[-1]
    return None


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
        top = cache_dir("kernel-src", key)
        src = KernelSource("debian-package", k.version, key, top / pkg, planned=run.plan)
        if not src.ready:
            r = runner.work(["tar", "-xf", str(tarball), "-C", str(top)], note="extract once into the cache",
                            timeout=1800)
            src.commands.append(r.cmdline)
            if not r.planned:
                (top / ".complete").write_text(pv + "\n")
    elif k.source == "git":
        key = f"git-{k.git_ref}"
        top = cache_dir("kernel-src", key)
        src = KernelSource("git", k.version, key, top / "linux", planned=run.plan)
        if not src.ready:
            r = runner.work(["git", "clone", "--depth=1", "--branch", k.git_ref, k.git_url, str(src.tree)],
                            timeout=3600, note="a stable tag, shallow")
            src.commands.append(r.cmdline)
            if not r.planned:
                (top / ".complete").write_text(k.git_ref + "\n")
    else:  # linux-tkg: Arch's makepkg flow; planned and documented, not run here
        top = cache_dir("kernel-src", "linux-tkg")
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
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() and not self.planned else None

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


def _make(src: KernelSource, build: Path, *targets: str, extra: list[str] | None = None) -> list[str]:
    return ["make", "-C", str(src.tree), f"O={build}", f"ARCH={ARCH}", *(extra or []), *targets]


def _fragment_file(src: KernelSource, name: str) -> Path | None:
    for d in ("kernel/configs", f"arch/{ARCH}/configs"):
        p = src.tree / d / name
        if p.exists():
            return p
    return None


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
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
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
        r = runner.probe(["xz", "-dc", str(xz)], check=not run.plan, quiet=True)
        res.commands.append(r.cmdline + f" > {cfg}")
        runner.write_file(cfg, r.stdout, note="Debian's config") if r.rc == 0 else None
    elif base == "running":
        r = runner.probe(["zcat", "/proc/config.gz"], check=not run.plan, quiet=True)
        res.commands.append(r.cmdline + f" > {cfg}")
        runner.write_file(cfg, r.stdout, note="the running kernel's config") if r.rc == 0 else None
    else:
        p = resolve_in_project(k.base_config_file)
        r = runner.probe(["cat", str(p)], check=not run.plan, quiet=True)
        res.commands.append(f"cp {p} {cfg}")
        runner.write_file(cfg, r.stdout, note="base config file") if r.rc == 0 else None
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
    r = run.runner.probe(["gcc", "-dumpfullversion"], check=False, quiet=True)
    return (r.stdout.strip() or "unknown") if r.rc == 0 else "none"


def _jobs(run) -> int:
    j = run.params.kernel.jobs
    return os.cpu_count() or 1 if j == "auto" else int(j)


def build(run, cfg: ConfigResult, target: str | None = None) -> BuildResult:
    """Build the configured kernel; cached by source + final .config + compiler + target."""
    k = run.params.kernel
    target = target or k.build_target
    gcc = compiler_version(run)
    chash = cfg.config_hash or "planned"
    key = hashlib.sha256(f"{cfg.source.key}|{chash}|{gcc}|{target}".encode()).hexdigest()[:16]
    bdir = cache_dir("kernel-build", f"{cfg.source.version}-{key}")
    image = bdir / "arch/x86/boot/bzImage"
    marker = bdir / ".synapse-built.json"
    make_targets = {"bzImage": ["bzImage"], "all": ["all"], "bindeb-pkg": ["bindeb-pkg"]}[target]
    argv = _make(cfg.source, bdir, *make_targets, extra=[f"-j{_jobs(run)}", f"LOCALVERSION={k.localversion}"])
    if cfg.planned or run.plan:
        r = run.runner.work(argv, note="build (planned)")
        return BuildResult(key, bdir, target, image, False, planned=True, command=r.cmdline)
    if marker.exists() and image.exists():
        info = json.loads(marker.read_text())
        return BuildResult(key, bdir, target, image, True, objects=info.get("objects"), seconds=info.get("seconds"),
                           release=info.get("release"), command=info.get("command", ""))
    # the final .config of the config step is this build's input
    run.runner.write_file(bdir / ".config", cfg.config_path.read_bytes(), note="the final .config")
    stats = cache_dir("kernel-stats") / "objects.json"
    prev = json.loads(stats.read_text()) if stats.exists() else {}
    skey = f"{cfg.source.version}|{cfg.base}|{target}"
    progress = KbuildProgress(estimate_objects(cfg.final_config, prev.get(skey)))
    t0 = time.time()
    r = run.runner.work(argv, progress=progress, timeout=k.build_timeout_s, note="kernel build")
    seconds = time.time() - t0
    rel = run.runner.probe(_make(cfg.source, bdir, "-s", "kernelrelease",
                                 extra=[f"LOCALVERSION={k.localversion}"]), quiet=True).stdout.strip()
    prev[skey] = progress.objects
    stats.write_text(json.dumps(prev, indent=1))
    info = {"objects": progress.objects, "seconds": round(seconds, 1), "release": rel, "command": r.cmdline,
            "gcc": gcc, "config_hash": chash, "source": cfg.source.key}
    marker.write_text(json.dumps(info, indent=1))
    return BuildResult(key, bdir, target, image, False, objects=progress.objects, seconds=round(seconds, 1),
                       release=rel, command=r.cmdline)


# ---------------------------------------------------------------------------------------------
# install into a target root + systemd-boot entry
# ---------------------------------------------------------------------------------------------
ENTRY_TOKEN = "synapse"  # phase 02's entry token (/etc/kernel/entry-token)


def boot_entry(title: str, release: str, root_spec: str, cmdline: list[str], initrd: bool = True) -> str:
    """A systemd-boot Type #1 entry (paths relative to the ESP), laid out as kernel-install does."""
    lines = [f"title   {title} ({release})", f"version {release}",
             f"linux   /{ENTRY_TOKEN}/{release}/linux"]
    if initrd:
        lines.append(f"initrd  /{ENTRY_TOKEN}/{release}/initrd")
    lines.append("options " + " ".join([f"root={root_spec}", *cmdline]))
    return "\n".join(lines) + "\n"


def entry_with_options(entry_text: str, extra: list[str]) -> str:
    """Pure: the BLS entry with ``extra`` appended to its ``options`` line (tokens already there,
    by name, are not repeated)."""
    out, done = [], False
    for ln in entry_text.splitlines():
        if ln.startswith("options") and not done:
            toks = ln.split()[1:]
            names = {t.split("=", 1)[0] for t in toks}
            toks += [t for t in extra if t.split("=", 1)[0] not in names]
            ln, done = "options " + " ".join(toks), True
        out.append(ln)
    if not done and extra:
        out.append("options " + " ".join(extra))
    return "\n".join(out) + "\n"


def loader_default(conf_text: str, entry_name: str) -> str:
    """Pure: loader.conf with ``default`` set to ``entry_name`` (the rest kept)."""
    lines = [ln for ln in conf_text.splitlines() if not re.match(r"^\s*default\s", ln)]
    at = next((i for i, ln in enumerate(lines) if not ln.startswith("#")), len(lines))
    lines.insert(at, f"default {entry_name}")
    return "\n".join(lines) + "\n"


@dataclass
class InstallPlan:
    root: str
    release: str
    commands: list[str]
    entry: str
    planned: bool
    entry_name: str = ""
    checks: list[dict] = field(default_factory=list)  # read back from the target: requested vs found

    @property
    def ok(self) -> bool:
        return self.planned or (bool(self.checks) and all(c["ok"] for c in self.checks))

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.checks, columns=["item", "requested", "in effect", "ok"])

    def as_dict(self) -> dict:
        return {"root": self.root, "release": self.release, "entry_name": self.entry_name, "entry": self.entry,
                "planned": self.planned, "checks": self.checks, "commands": self.commands}

    def _repr_markdown_(self) -> str:
        state = "planned, not run" if self.planned else ("done, read back" if self.ok else "READ-BACK MISMATCH")
        cmds = "\n".join(f"$ {c}" for c in self.commands)
        rows = "".join(f"\n| {c['item']} | `{c['requested']}` | `{c['in effect']}` | {'ok' if c['ok'] else '**NO**'} |"
                       for c in self.checks)
        table = ("\n\n| item | requested | in effect | ok |\n|---|---|---|---|" + rows) if rows else ""
        return (f"**install into `{self.root}`** ({state})\n\n```\n{cmds}\n```\n\nboot entry "
                f"`{self.entry_name}`:\n\n```\n{self.entry}```" + table)


def install(run, cfg: ConfigResult, built: BuildResult, root: str | None = None,
            root_spec: str = "PARTUUID=<root partition>") -> InstallPlan:
    """Install the kernel (and its modules) into the target root and add a systemd-boot entry.

    The same way phase 02 put the distribution's kernel there: the files under ``/boot``, a dracut
    initrd, then ``kernel-install add`` inside the root, which copies both onto the ESP and writes
    the BLS entry from ``/etc/kernel/cmdline``. ``kernel.install.cmdline`` is appended to that
    entry's options, and ``loader.conf`` names the new entry as default (the distribution's entry
    stays as the fallback). Everything is read back from the root.

    ``root`` is the mounted target root (see :func:`install_into_target`). Without one, or with
    ``kernel.install.enabled: false``, the commands are shown and not run.
    """
    from .cmdline import check_tokens

    k = run.params.kernel
    ins = k.install
    check_tokens(list(ins.cmdline), key="kernel.install.cmdline")  # refuse before anything runs
    root = root or (ins.root if ins.root != "auto" else None)
    release = built.release or f"<release>{k.localversion}"
    runner = run.runner
    if not run.plan and (root is None or not ins.enabled or cfg.planned or built.planned):
        from .journal import Journal
        from .runner import Runner

        runner = Runner(journal=Journal(None), plan=True, phase=run.phase)  # shown, never run
    root = root or "/mnt/target"
    rootp = Path(root)
    esp = rootp / ins.esp.lstrip("/")
    cmds: list[str] = []
    src, bdir = cfg.source, built.dir
    modules = (cfg.final_config or {}).get("MODULES", "y" if cfg.planned else "n") == "y"
    relax = ["env", "SYSTEMD_RELAX_ESP_CHECKS=1"]  # the ESP may be a staging tmpfs (see bootloader)
    if ins.method == "bindeb-pkg":
        debs = sorted(bdir.parent.glob(f"linux-image-{release}_*.deb"), key=lambda p: p.stat().st_mtime)
        deb = debs[-1] if debs else bdir.parent / f"linux-image-{release}_<version>_amd64.deb"
        cmds.append(runner.change(["install", "-D", "-m", "0644", str(deb), f"{root}/tmp/{deb.name}"]).cmdline)
        # Debian's postinst hooks run kernel-install (systemd-boot's zz-systemd-boot) themselves
        cmds.append(runner.change([*relax, "dpkg", "-i", f"/tmp/{deb.name}"], root=root, timeout=1800).cmdline)
    else:
        if modules:
            cmds.append(runner.change(_make(src, bdir, "modules_install",
                                            extra=[f"INSTALL_MOD_PATH={root}", "INSTALL_MOD_STRIP=1"]),
                                      timeout=1800, note="modules into the target root").cmdline)
        for f, dst in ((built.image, f"vmlinuz-{release}"), (bdir / ".config", f"config-{release}"),
                       (bdir / "System.map", f"System.map-{release}")):
            cmds.append(runner.change(["install", "-D", "-m", "0644", str(f), f"{root}/boot/{dst}"]).cmdline)
        # the initrd as Debian's kernel postinst makes it (Debian's dracut has no kernel-install
        # plugin), with phase 02's /etc/dracut.conf.d; then kernel-install copies both onto the ESP
        cmds.append(runner.change(["dracut", "--force", "--kver", release, f"/boot/initrd.img-{release}"], root=root,
                                  timeout=1800, note="systemd-based initrd (phase 02's dracut config)").cmdline)
        cmds.append(runner.change([*relax, "kernel-install", "add", release, f"/boot/vmlinuz-{release}",
                                   f"/boot/initrd.img-{release}"], root=root, timeout=1800,
                                  note="kernel + initrd + BLS entry from /etc/kernel/cmdline, as in phase 02").cmdline)
    entry_name = f"{ENTRY_TOKEN}-{release}.conf"
    entry_path = esp / "loader/entries" / entry_name
    conf_path = esp / "loader/loader.conf"
    if runner.plan:
        entry = boot_entry(ins.entry_title, release, root_spec, ["<the target's /etc/kernel/cmdline>", *ins.cmdline])
        cmds.append(runner.write_file(entry_path, entry, note="append kernel.install.cmdline").cmdline)
        cmds.append(runner.write_file(conf_path, f"default {entry_name}\n", note="the new kernel by default").cmdline)
        return InstallPlan(str(root), release, cmds, entry, planned=True, entry_name=entry_name)
    written = entry_path.read_text() if entry_path.exists() else ""
    if not written:
        raise KernelError(f"kernel-install wrote no entry {entry_path}: is {root} a phase 02 target "
                          f"(systemd-boot, /etc/kernel/entry-token = {ENTRY_TOKEN})?")
    entry = entry_with_options(written, list(ins.cmdline))
    cmds.append(runner.write_file(entry_path, entry, note="kernel.install.cmdline appended").cmdline)
    if ins.make_default:
        conf = conf_path.read_text() if conf_path.exists() else ""
        cmds.append(runner.write_file(conf_path, loader_default(conf, entry_name),
                                      note="the new kernel by default; the distribution's entry stays").cmdline)
    res = InstallPlan(str(root), release, cmds, entry, planned=False, entry_name=entry_name)
    res.checks = read_back_install(rootp, esp, release, entry_name, list(ins.cmdline), modules, ins.make_default)
    res.checks.append(initrd_drivers_row(rootp, release))
    run.record("kernel_install", res.as_dict())
    if not res.ok:
        bad = "; ".join(f"{c['item']}: requested {c['requested']}, in effect {c['in effect']}"
                        for c in res.checks if not c["ok"])
        fix = (" (add the missing drivers to kernel.keep_modules so localmodconfig keeps them, or turn their "
               "options on in kernel.options)" if not res.checks[-1]["ok"] else "")
        raise KernelError(f"kernel install read-back mismatch in {root}: {bad}{fix}")
    return res


def read_back_install(root: Path, esp: Path, release: str, entry_name: str, extra: list[str], modules: bool,
                      make_default: bool) -> list[dict]:
    """What the target now holds for ``release``: files, modules, the entry and loader.conf."""
    from .bootloader import parse_bls_entry

    def row(item, requested, in_effect, ok):
        return {"item": item, "requested": requested, "in effect": in_effect, "ok": bool(ok)}

    ep = esp / "loader/entries" / entry_name
    entry = parse_bls_entry(ep.read_text()) if ep.exists() else {}
    opts = entry.get("options", "").split()
    kdir = esp / ENTRY_TOKEN / release
    initrds = sorted(p.name for p in kdir.glob("initrd*")) if kdir.exists() else []
    conf = (esp / "loader/loader.conf").read_text() if (esp / "loader/loader.conf").exists() else ""
    default = next((ln.split(None, 1)[1].strip() for ln in conf.splitlines() if ln.startswith("default ")), None)
    mdir = root / "lib/modules" / release
    rows = [
        row("kernel in /boot", f"vmlinuz-{release}", f"vmlinuz-{release}" if (root / "boot" / f"vmlinuz-{release}").exists()
            else None, (root / "boot" / f"vmlinuz-{release}").exists()),
        row("modules", f"/lib/modules/{release} with modules.dep" if modules else "none (MODULES=n)",
            ("modules.dep" if (mdir / "modules.dep").exists() else "missing") if modules else "-",
            (mdir / "modules.dep").exists() if modules else True),
        row("kernel on ESP", f"{ENTRY_TOKEN}/{release}/linux", "present" if (kdir / "linux").exists() else None,
            (kdir / "linux").exists()),
        row("initrd on ESP (dracut)", f"{ENTRY_TOKEN}/{release}/initrd", ", ".join(initrds) or None, bool(initrds)),
        row("boot entry", entry_name, entry.get("version") and entry_name, entry.get("version") == release),
        row("entry options", " ".join(extra) or "(the target's command line)", " ".join(opts) or None,
            bool(opts) and all(t in opts for t in extra) and any(t.startswith("root=") for t in opts)),
    ]
    if make_default:
        rows.append(row("loader.conf default", entry_name, default, default == entry_name))
    return rows


def dracut_drivers(conf_texts: list[str]) -> list[str]:
    """Pure: module names that dracut config files add (``add_drivers+=" a b "``, ``force_drivers``)."""
    out: list[str] = []
    for text in conf_texts:
        for m in re.finditer(r"""^\s*(?:add_drivers|force_drivers)\+?=\s*["']([^"']*)["']""", text, re.M):
            out += [x for x in m.group(1).split() if x not in out]
    return out


def module_names(modules_dep: str, modules_builtin: str) -> set[str]:
    """Pure: the module names a kernel has (loadable from modules.dep, built in from
    modules.builtin), with ``-`` as ``_`` as modprobe treats them."""
    names = set()
    for text in (modules_dep, modules_builtin):
        for ln in text.splitlines():
            path = ln.split(":", 1)[0].strip()
            if path:
                names.add(re.sub(r"\.ko(\.\w+)?$", "", path.rsplit("/", 1)[-1]).replace("-", "_"))
    return names


def initrd_drivers_row(root: Path, release: str) -> dict:
    """Read back: does the kernel have every driver the target's dracut config puts in the initrd?
    (dracut only logs ``FAILED`` for a missing one and builds the initrd anyway.)"""
    confs = [p.read_text(errors="replace") for p in sorted((root / "etc/dracut.conf.d").glob("*.conf"))]
    want = dracut_drivers(confs)
    mdir = root / "lib/modules" / release
    have = module_names(*((mdir / f).read_text(errors="replace") if (mdir / f).exists() else ""
                          for f in ("modules.dep", "modules.builtin")))
    missing = [m for m in want if m.replace("-", "_") not in have]
    return {"item": "initrd drivers (dracut add_drivers)", "requested": " ".join(want) or "(none)",
            "in effect": f"missing: {' '.join(missing)}" if missing else "all present", "ok": not missing}


def install_into_target(run, cfg: ConfigResult, built: BuildResult, check: bool = True) -> InstallPlan:
    """Install into phase 02's target (image or disk), mounted through :mod:`aios_lib.image`;
    with ``target.kind: none`` or ``kernel.install.enabled: false`` only shows the commands.
    With ``check``, the phase's boot check for this kernel (:func:`boot_in_target`'s guest check)
    is installed beside it."""
    if run.params.target.kind == "none" or not run.params.kernel.install.enabled \
            or (not run.plan and (cfg.planned or built.planned)):
        return install(run, cfg, built)
    from . import image

    target = image.open_target(run)
    if run.plan:  # the same steps, mounts included, listed and not run
        with target.mounted() as root:
            return install(run, cfg, built, root=str(root))
    if target.image is not None and not target.image.exists():
        raise KernelError(f"{target.image} does not exist: build the target first (phase 02, e.g. phases: "
                          f"[\"02\", \"03\"] in {run.params.source_file or 'the parameters'})")
    with target.mounted() as root:
        res = install(run, cfg, built, root=str(root), root_spec=_root_spec(run, root))
        if check:
            target.add_guest_check("kernel", guest_check_script(cfg))
    if target.image is not None:  # the image now holds more than phase 02 built: say so
        target._write_manifest(kernel_installed=res.release, kernel_entry=res.entry_name)
    return res


def _root_spec(run, root) -> str:
    r = run.runner.probe(["findmnt", "-n", "-o", "PARTUUID", "--target", str(root)], check=False, quiet=True)
    pu = r.stdout.strip()
    return f"PARTUUID={pu}" if pu else "PARTUUID=<root partition>"


# ---------------------------------------------------------------------------------------------
# boot the installed kernel inside the target (phase 02's image and its QEMU check)
# ---------------------------------------------------------------------------------------------
def table_symbols(cfg: ConfigResult) -> list[str]:
    """The symbols the table is about, as they exist in this tree (renames applied), plus HZ."""
    syms = []
    for r in cfg.table:
        s = r.symbol or r.requested
        if s and s not in syms:
            syms.append(s)
        if s and s.startswith("HZ_") and "HZ" not in syms:
            syms.append("HZ")  # the value the choice yields
    return syms


def guest_check_script(cfg: ConfigResult) -> str:
    """A guest check (see ``sysconfig.install_guest_check``) that prints the booted kernel's own
    configuration: a hash of /proc/config.gz and the table's symbols, one ``AIOS-CHECK`` line each."""
    syms = " ".join(table_symbols(cfg))
    return ("#!/bin/sh\n# Synapse phase 03: the running kernel's configuration, read from /proc/config.gz\n"
            "if [ ! -r /proc/config.gz ]; then echo 'AIOS-CHECK kconfig_sha=no /proc/config.gz (IKCONFIG_PROC off)'; "
            "exit 0; fi\n"
            "echo \"AIOS-CHECK kconfig_sha=$(zcat /proc/config.gz | sha256sum | cut -c1-16)\"\n"
            f"for s in {syms}; do\n"
            "  v=$(zcat /proc/config.gz | sed -n \"s/^CONFIG_$s=//p\" | tr -d '\"')\n"
            "  echo \"AIOS-CHECK kconfig.$s=${v:-n}\"\n"
            "done\n")


def booted_config(report: dict[str, str]) -> dict[str, str]:
    """Pure: the ``kconfig.<SYM>`` lines of a guest report as a config dict (``n`` left out, as in
    a .config)."""
    return {k[len("kconfig."):]: v for k, v in report.items() if k.startswith("kconfig.") and v != "n"}


def boot_expectation(cfg: ConfigResult, built: BuildResult, inst: InstallPlan) -> dict[str, str]:
    """Extra rows for phase 02's verification boot: this kernel, its entry, its own config."""
    exp = {"kernel": built.release or "?", "loader_entry": inst.entry_name,
           "kconfig_sha": (cfg.config_hash or "?")}
    for s in table_symbols(cfg):
        exp[f"kconfig.{s}"] = kconfig.config_value(cfg.final_config, s) or "n"
    return exp


def boot_in_target(run, cfg: ConfigResult, built: BuildResult, inst: InstallPlan):
    """Boot the target (snapshot: unchanged) in QEMU through systemd-boot with the new kernel as
    default, and compare every row: phase 02's settings, then uname -r, the entry, the command line
    with ``kernel.install.cmdline``, and the kernel's own /proc/config.gz against the build.
    None without a target; in plan mode the QEMU command is listed, not run."""
    from . import image

    if run.params.target.kind == "none" or not run.params.kernel.install.enabled or (inst.planned and not run.plan):
        return None  # nothing was installed into a target
    target = image.open_target(run)
    exp = boot_expectation(cfg, built, inst)
    return target.verify(extra=exp, label="kernel-boot", cmdline_extra=list(run.params.kernel.install.cmdline))


def record(run, cfg: ConfigResult, built: BuildResult | None = None, booted=None,
           inst: InstallPlan | None = None, in_target=None) -> dict:
    """Keep what later phases and comparisons need in results.json: the table, the build, the
    busybox boot read-back, the install into the target and the boot inside it."""
    out = {"config": cfg.summary(), "table": [r.as_dict() for r in cfg.rows],
           "build": built.as_dict() if built else None, "boot": None, "install": None, "boot_in_target": None}
    if booted is not None and not getattr(booted, "planned", True):
        agree = {r.symbol or r.requested: kconfig.config_value(booted.config, r.symbol or r.requested)
                 == kconfig.config_value(cfg.final_config, r.symbol or r.requested) for r in cfg.table}
        out["boot"] = {**booted.as_dict(), "table_agrees": all(agree.values()) if booted.config else None,
                       "agree": agree}
    if inst is not None:
        out["install"] = inst.as_dict()
    if in_target is not None and not getattr(in_target, "planned", True):
        out["boot_in_target"] = {"ok": in_target.ok, "seconds": round(in_target.seconds, 1), "rows": in_target.rows,
                                 "serial_log": in_target.log, "report_log": in_target.report_log}
    run.record("kernel", out)
    return out
