"""Phase 3: the target booted with the new kernel under QEMU; the guest reports ``uname -r``, the
entry, the command line and a hash of ``/proc/config.gz``, compared with the build.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import kconfig
from .build import BuildResult
from .config import ConfigResult

if TYPE_CHECKING:  # install imports this module (its guest check); a type only here
    from .install import InstallPlan


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
    from ..system import image

    if run.params.target.kind == "none" or not run.params.kernel.install.enabled or (inst.planned and not run.plan):
        return None  # nothing was installed into a target
    exp = boot_expectation(cfg, built, inst)
    return image.verify(run, image.start(run), extra=exp, label="kernel-boot",
                        cmdline_extra=list(run.params.kernel.install.cmdline))


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
