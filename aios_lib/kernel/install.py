"""Phase 3: the built kernel installed into a target the way phase 02 installed Debian's
(``modules_install``, ``kernel-install`` in the root: dracut initrd and a BLS entry), made the
default boot entry, and read back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from .build import BuildResult
from .config import ConfigResult
from .source import KernelError, _make
from .boot_check import guest_check_script
from ..facts.boot import parse_bls_entry, parse_loader_default
from ..system.bootloader import ENTRY_TOKEN, boot_entry, entry_with_options, loader_default


# ---------------------------------------------------------------------------------------------
# install into a target root + systemd-boot entry (its text: system/bootloader.py)
# ---------------------------------------------------------------------------------------------
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
    k = run.params.kernel
    ins = k.install  # ins.cmdline was checked when the parameters loaded
    root = root or (ins.root if ins.root != "auto" else None)
    release = built.release or f"<release>{k.localversion}"
    runner = run.runner
    if not run.plan and (root is None or not ins.enabled or cfg.planned or built.planned):
        why = ("kernel.install.enabled is false" if not ins.enabled else "no target root" if root is None
               else "the kernel was not built in this run")
        runner = runner.planning(f"{why}: shown, not run")
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
    def row(item, requested, in_effect, ok):
        return {"item": item, "requested": requested, "in effect": in_effect, "ok": bool(ok)}

    ep = esp / "loader/entries" / entry_name
    entry = parse_bls_entry(ep.read_text()) if ep.exists() else {}
    opts = entry.get("options", "").split()
    kdir = esp / ENTRY_TOKEN / release
    initrds = sorted(p.name for p in kdir.glob("initrd*")) if kdir.exists() else []
    conf = (esp / "loader/loader.conf").read_text() if (esp / "loader/loader.conf").exists() else ""
    default = parse_loader_default(conf)
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
    """Install into phase 02's target (image or disk), mounted through :mod:`aios_lib.system.image`;
    with ``target.kind: none`` or ``kernel.install.enabled: false`` only shows the commands.
    With ``check``, the phase's boot check for this kernel (:func:`boot_in_target`'s guest check)
    is installed beside it."""
    if run.params.target.kind == "none" or not run.params.kernel.install.enabled \
            or (not run.plan and (cfg.planned or built.planned)):
        return install(run, cfg, built)
    from ..system import target

    spec = target.open_target(run)
    if run.plan:  # the same steps, mounts included, listed and not run
        with target.mounted(run.runner, spec) as m:
            return install(run, cfg, built, root=str(m.root))
    if spec.image is not None and not spec.image.exists():
        raise KernelError(f"{spec.image} does not exist: build the target first (phase 02, e.g. phases: "
                          f"[\"02\", \"03\"] in {run.params.source_file or 'the parameters'})")
    with target.mounted(run.runner, spec) as m:
        res = install(run, cfg, built, root=str(m.root), root_spec=_root_spec(run, m.root))
        if check:
            target.add_guest_check(run.runner, m, "kernel", guest_check_script(cfg))
    # the image now holds more than phase 02 built: say so (nothing for a disk)
    target.write_manifest(run.runner, spec, kernel_installed=res.release, kernel_entry=res.entry_name)
    return res


def _root_spec(run, root) -> str:
    r = run.runner.probe(["findmnt", "-n", "-o", "PARTUUID", "--target", str(root)], check=False, quiet=True)
    pu = r.stdout.strip()
    return f"PARTUUID={pu}" if pu else "PARTUUID=<root partition>"
