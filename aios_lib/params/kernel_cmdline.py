"""The rules of a kernel command line: which names a kernel (or its userspace) knows, and which values.

The blueprint's section 5.2 line ``root=PARTUUID=... rw auditing=0 logic=no mitigations=off
nowatchdog nmi_watchdog=0`` carries two names no kernel knows (``auditing=0``, ``logic=no``): the
kernel passes unknown words on to init, where they do nothing. ``audit=0`` is the real switch.
Here every name must be known:

* kernel parameters documented in Linux 6.12 ``Documentation/admin-guide/kernel-parameters.txt``
  (the list is kept in ``aios_lib/data/kernel-parameters.txt``);
* module parameters (``module.param=value``, e.g. ``i915.enable_guc=2``);
* parameters read by systemd and the initrd (``systemd.*``, ``rd.*``, ``udev.*``, ...).

``mitigations=off`` disables CPU vulnerability mitigations: :func:`check_tokens` returns a warning
for it; that it needs ``machine.trusted_offline`` is a rule of the whole file (``params/__init__``).
Used by the parameter model when a file loads (:data:`aios_lib.params.types.KernelCmdline`);
assembling a boot entry's line is :mod:`aios_lib.system.cmdline`.
"""
from __future__ import annotations

import re
from functools import lru_cache

from ..core.paths import PACKAGE_DIR

DATA = PACKAGE_DIR / "data" / "kernel-parameters.txt"

#: name prefixes read by systemd, its generators and the initrd rather than by the kernel
USERSPACE_PREFIXES = ("systemd.", "rd.", "udev.", "plymouth.", "luks.", "vconsole.", "locale.")
#: whole names read by systemd, its generators and the initrd rather than by the kernel
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
MITIGATIONS_OFF = "mitigations=off"
MITIGATIONS_WARNING = ("mitigations=off disables CPU vulnerability mitigations (Spectre, Meltdown, MDS...): "
                       "only for a trusted machine on an offline network")


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


def split_token(token: str) -> tuple[str, str | None]:
    """``name=value`` -> (name, value); a bare word -> (word, None)."""
    if "=" in token:
        n, v = token.split("=", 1)
        return n, v
    return token, None


def is_known(name: str) -> bool:
    if name in known_parameters() or name in USERSPACE:
        return True
    if name.startswith(USERSPACE_PREFIXES):
        return True
    # module parameters: <module>.<param> (the kernel hands them to the module when it loads)
    return bool(re.fullmatch(r"[a-z0-9_]+\.[a-zA-Z0-9_]+", name)) and name.split(".")[0] not in MEANT


def check_tokens(tokens: list[str], key: str = "") -> list[str]:
    """Raise :class:`CmdlineError` for an unknown parameter or a bad value; return the warnings.

    ``key`` prefixes the message (``"kernel.install.cmdline: ..."``); the parameter model leaves it
    empty because its error line names the key already.
    """
    warnings = []
    pre = f"{key}: " if key else ""
    for tok in tokens:
        if not tok or any(c.isspace() for c in tok):
            raise CmdlineError(f"{pre}`{tok}` must be one word per list item")
        name, value = split_token(tok)
        if name in MEANT:
            raise CmdlineError(f"{pre}`{tok}` is not a kernel parameter; {MEANT[name]}")
        if not is_known(name):
            raise CmdlineError(f"{pre}`{tok}` is not a known kernel parameter (Linux 6.12 "
                               f"kernel-parameters.txt, module.param or systemd.*/rd.*); remove or fix it")
        allowed = VALUES.get(name)
        if allowed is not None and value is not None and value not in allowed:
            raise CmdlineError(f"{pre}`{tok}`: {name}= takes one of {sorted(allowed)}")
        if tok == MITIGATIONS_OFF:
            warnings.append(MITIGATIONS_WARNING)
    return warnings


def value_of(tokens: list[str], name: str) -> str | None:
    """The value the kernel takes for ``name=`` (the last one given), or None."""
    values = [v for n, v in map(split_token, tokens) if n == name and v is not None]
    return values[-1] if values else None
