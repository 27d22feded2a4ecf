"""The kernel command line: built from parameters, checked against known parameters.

The blueprint's section 5.2 line ``root=PARTUUID=... rw auditing=0 logic=no mitigations=off
nowatchdog nmi_watchdog=0`` carries two names no kernel knows (``auditing=0``, ``logic=no``): the
kernel passes unknown words on to init, where they do nothing. ``audit=0`` is the real switch.
Here every name must be known:

* kernel parameters documented in Linux 6.12 ``Documentation/admin-guide/kernel-parameters.txt``
  (the list is kept in ``aios_lib/data/kernel-parameters.txt``);
* module parameters (``module.param=value``, e.g. ``i915.enable_guc=2``);
* parameters read by systemd and the initrd (``systemd.*``, ``rd.*``, ``udev.*``, ...).

``mitigations=off`` disables CPU vulnerability mitigations: it is accepted only when
``machine.trusted_offline`` is true, and the phase's record carries a warning.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from ..core.paths import PACKAGE_DIR

DATA = PACKAGE_DIR / "data" / "kernel-parameters.txt"

#: read by systemd, its generators and the initrd rather than by the kernel
USERSPACE_PREFIXES = ("systemd.", "rd.", "udev.", "rd_", "plymouth.", "luks.", "fstab", "resume",
                      "root", "mount.", "swap", "vconsole.", "locale.", "debug", "emergency", "rescue", "single")
USERSPACE = {"rw", "ro", "quiet", "splash", "emergency", "rescue", "single", "s", "S", "1", "2", "3", "4", "5",
             "resume", "resume_offset", "fsck.mode", "fsck.repair", "quotacheck.mode", "zswap.enabled",
             "rootwait", "rootdelay", "rootflags", "rootfstype", "init", "nomodeset", "nosplash", "systemd.volatile"}
#: the value sets worth checking here (a wrong value is otherwise silently ignored)
VALUES = {
    "mitigations": {"off", "auto", "auto,nosmt"},
    "transparent_hugepage": {"always", "madvise", "never"},
    "audit": {"0", "1", "off", "on"},
    "nmi_watchdog": {"0", "1", "panic", "nopanic"},
    "systemd.volatile": {"yes", "no", "state", "overlay"},
    "preempt": {"none", "voluntary", "full"},
}
#: names the blueprint uses that do not exist, with what was meant
MEANT = {"auditing": "use audit=0", "logic": "it means nothing to the kernel: remove it"}


class CmdlineError(ValueError):
    """A kernel command line problem, one line naming the parameter and the fix."""


@lru_cache(maxsize=1)
def known_parameters() -> frozenset[str]:
    names = set()
    for line in DATA.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.rstrip("="))
    return frozenset(names)


def _name(token: str) -> tuple[str, str | None]:
    if "=" in token:
        n, v = token.split("=", 1)
        return n, v
    return token, None


def is_known(name: str) -> bool:
    if name in known_parameters() or name in USERSPACE:
        return True
    if any(name.startswith(p) for p in ("systemd.", "rd.", "udev.", "plymouth.", "luks.", "vconsole.", "locale.")):
        return True
    # module parameters: <module>.<param> (the kernel hands them to the module when it loads)
    return bool(re.fullmatch(r"[a-z0-9_]+\.[a-zA-Z0-9_]+", name)) and name.split(".")[0] not in MEANT


def check_tokens(tokens: list[str], key: str = "system.kernel_cmdline") -> list[str]:
    """Raise :class:`CmdlineError` for an unknown parameter or a bad value; returns warnings."""
    warnings = []
    pre = f"{key}: " if key else ""
    for tok in tokens:
        if not tok or any(c.isspace() for c in tok):
            raise CmdlineError(f"{pre}`{tok}` must be one word per list item")
        name, value = _name(tok)
        if name in MEANT:
            raise CmdlineError(f"{pre}`{tok}` is not a kernel parameter; {MEANT[name]}")
        if not is_known(name):
            raise CmdlineError(f"{pre}`{tok}` is not a known kernel parameter (Linux 6.12 "
                               f"kernel-parameters.txt, module.param or systemd.*/rd.*); remove or fix it")
        allowed = VALUES.get(name)
        if allowed is not None and value is not None and value not in allowed:
            raise CmdlineError(f"{pre}`{tok}`: {name}= takes one of {sorted(allowed)}")
        if name == "mitigations" and value == "off":
            warnings.append("mitigations=off disables CPU vulnerability mitigations (Spectre, Meltdown, MDS...): "
                            "only for a trusted machine on an offline network")
    return warnings


@dataclass
class Cmdline:
    """The validated command line of the boot entry."""

    tokens: list[str]
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(self.tokens)


def build_cmdline(params, root_ref: str = "PARTUUID=<root>", rw: bool = True) -> Cmdline:
    """``root=<root_ref> rw`` plus ``params.system.kernel_cmdline``, checked.

    ``mitigations=off`` without ``machine.trusted_offline: true`` is an error naming the key.
    """
    extra = list(params.system.kernel_cmdline)
    warnings = check_tokens(extra)
    if "mitigations=off" in extra and not params.machine.trusted_offline:
        raise CmdlineError("system.kernel_cmdline: `mitigations=off` needs machine.trusted_offline: true "
                           "(it disables CPU vulnerability mitigations); set it or remove mitigations=off")
    thp = next((v for n, v in map(_name, extra) if n == "transparent_hugepage"), None)
    if thp and thp != params.system.thp:
        warnings.append(f"transparent_hugepage={thp} on the command line differs from system.thp={params.system.thp}; "
                        "the tmpfiles.d setting wins after boot")
    names = {_name(t)[0] for t in extra}
    tokens = ([] if "root" in names else [f"root={root_ref}"]) + ([] if names & {"rw", "ro"} else ["rw" if rw else "ro"])
    return Cmdline(tokens + extra, warnings)


def parse_cmdline(text: str, ignore=("initrd", "BOOT_IMAGE")) -> list[str]:
    """/proc/cmdline as tokens, without what the boot loader adds by itself (``initrd=``)."""
    return [t for t in text.split() if _name(t)[0] not in ignore]
