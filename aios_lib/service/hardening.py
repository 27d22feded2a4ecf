"""Phase 6: hardening and minimalisation (blueprint 5.1-5.3, Phase 6's "disable SSH").

* :func:`security_cmdline`: the boot entry's security words (``audit=0``, ``nowatchdog``,
  ``nmi_watchdog=0``) added to the parameters' line; ``mitigations=off`` there was allowed at load
  only behind ``machine.trusted_offline``, and its warning goes into the record.
* :func:`journald_text`: the journald limits drop-in phase 02 writes
  (:class:`aios_lib.settings.journald.Journald`: ``Storage=volatile``, ``SystemMaxUse``,
  ``RuntimeMaxUse`` from ``system.journald``).
* :func:`mask_list` / :func:`mask_units`: what to mask in a target root: the blueprint's names,
  Debian's periodic jobs, and ssh when the parameters say local-only (masked by
  :class:`aios_lib.settings.units.MaskedUnits`, absent ones too).
* :func:`idle_cpu`: the idle-CPU figure from two ``/proc/stat`` samples taken in the booted image
  over a fixed window (parsed by :func:`aios_lib.facts.load.parse_proc_stat`).
* ``parse_running`` (``systemctl list-units --state=running``) is :func:`aios_lib.facts.systemd.parse_running`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..facts.load import parse_proc_stat
from ..settings._conf import parse_kv
from ..settings.journald import Journald
from ..settings.units import MaskedUnits, installed_units
from ..system import cmdline as cmdline_mod

#: what the blueprint's 5.2 asks for, spelled as the kernel knows it
SECURITY_WORDS = ["audit=0", "nowatchdog", "nmi_watchdog=0"]
SSH_UNITS = ["ssh.service", "sshd.service", "ssh.socket"]


# ---- kernel command line --------------------------------------------------------------------
@dataclass
class SecurityCmdline:
    tokens: list[str]
    added: list[str]
    warnings: list[str]
    mitigations_off: bool

    def __str__(self) -> str:
        return " ".join(self.tokens)

    def _repr_markdown_(self) -> str:
        w = "".join(f"\n\n> **WARNING**: {x}" for x in self.warnings)
        return f"```\n{self}\n```\nadded for 5.2: {', '.join(self.added) or 'nothing (already there)'}{w}"


def security_cmdline(run, root_ref: str = "PARTUUID=<root>", read_only: bool = False) -> SecurityCmdline:
    """The command line with 5.2's words added to ``system.kernel_cmdline``.

    The parameters were checked when they loaded (``mitigations=off`` only with
    ``machine.trusted_offline: true``); their warnings about the line go into the record."""
    p = run.params
    words = list(p.system.kernel_cmdline)
    added = [w for w in SECURITY_WORDS if w not in words]
    tokens = cmdline_mod.assemble(words + added, root_ref=root_ref, rw=not read_only)
    if read_only:
        tokens = ["ro" if t == "rw" else t for t in tokens]
        if "systemd.volatile=overlay" not in tokens:
            tokens.append("systemd.volatile=overlay")
    off = "mitigations=off" in tokens
    result = SecurityCmdline(tokens, added, p.warnings_for("system.kernel_cmdline"), off)
    run.record("cmdline", {"tokens": tokens, "added": added, "warnings": result.warnings,
                           "mitigations_off": off, "trusted_offline": p.machine.trusted_offline})
    return result


# ---- journald ---------------------------------------------------------------------------------
def journald_text(run) -> str:
    """The journald drop-in phase 02 writes into the image (one implementation: the setting's)."""
    return Journald(run.params.system.journald).render()


def parse_journald_config(text: str) -> dict[str, str]:
    """``systemd-analyze cat-config systemd/journald.conf`` (or a drop-in): the last value of each
    ``[Journal]`` key wins, as in systemd (:func:`aios_lib.settings._conf.parse_kv`)."""
    return parse_kv(text, "Journal")


# ---- service reduction -------------------------------------------------------------------------
def mask_list(run) -> list[str]:
    """Units to mask: the base system's list, the service section's, and ssh when local-only."""
    p = run.params
    units = list(dict.fromkeys([*p.system.mask_units, *p.service.mask_units]))
    if not p.service.ssh:
        units += [u for u in SSH_UNITS if u not in units]
    return units


def mask_units(run, root: Path) -> dict:
    """``systemctl --root=ROOT mask UNITS`` (works on a tree without systemd running) and the
    record of what was masked and what of it is installed in the tree."""
    units = mask_list(run)
    # every unit, installed or not: a later package install cannot bring a masked one back
    MaskedUnits(units, only_existing=False, reason="service reduction (blueprint 5.1)").apply(run.runner, root)
    rec = {"masked": units, "installed_in_target": installed_units(root, units),
           "ssh": "local-only: ssh units masked, openssh-server not installed" if not run.params.service.ssh
           else "ssh allowed by the parameters"}
    run.record("masked", rec)
    return rec


@dataclass
class IdleCpu:
    busy_pct: float
    window_s: float
    ticks: int
    busy_ticks: int
    goal_pct: float
    breakdown: dict = field(default_factory=dict)

    @property
    def meets_goal(self) -> bool:
        return self.busy_pct < self.goal_pct

    def _repr_markdown_(self) -> str:
        verdict = "meets" if self.meets_goal else "misses"
        return (f"idle CPU use: **{self.busy_pct:.3f} %** over {self.window_s:g} s "
                f"({self.busy_ticks} busy of {self.ticks} ticks, all CPUs); {verdict} the blueprint's "
                f"goal of < {self.goal_pct} %")


def idle_cpu(before: str, after: str, window_s: float, goal_pct: float = 0.1) -> IdleCpu:
    """Busy share of all CPU time between two /proc/stat samples (idle + iowait count as idle)."""
    a, b = parse_proc_stat(before), parse_proc_stat(after)
    total = b.total - a.total
    if total <= 0:
        raise ValueError("the two /proc/stat samples show no elapsed CPU time: was the second taken first?")
    # busy includes steal here (time the CPUs were not idle); the benchmark's load leaves it out
    busy = b.busy_incl_steal - a.busy_incl_steal
    breakdown = {k: getattr(b, k) - getattr(a, k) for k in ("user", "nice", "system", "irq", "softirq", "steal")}
    return IdleCpu(round(100.0 * busy / total, 4), window_s, total, busy, goal_pct, breakdown)
