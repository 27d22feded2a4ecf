"""What a kernel build starts from and what it reports: a base configuration's text (the running
kernel's ``/proc/config.gz``, Debian's ``linux-config-<version>`` package, a file) and the release a
configured build tree names (``make -s kernelrelease``).

The configuration text is copied into the build folder as it is (``.config`` is then parsed by
:func:`aios_lib.kernel.kconfig.parse_config`, the file-format library), so its parse keeps the text.
``required``: a real run stops at a failed read (the phase cannot go on without its base); a plan
lists the read and goes on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .base import Fact


def _text(required: bool, name: str, argv: Sequence[str]) -> Fact:
    return Fact(name=name, commands={"text": tuple(str(a) for a in argv)}, parse=lambda o: o.get("text") or "",
                optional=frozenset() if required else frozenset({"text"}))


def running_config(required: bool = True) -> Fact:
    """The running kernel's configuration (``CONFIG_IKCONFIG_PROC``)."""
    return _text(required, "running kernel config", ("zcat", "/proc/config.gz"))


def distro_config(xz: str | Path, required: bool = True) -> Fact:
    """A Debian kernel flavour's configuration (``/usr/src/linux-config-<v>/config.<flavour>.xz``)."""
    return _text(required, "distribution kernel config", ("xz", "-dc", str(xz)))


def config_file(path: str | Path, required: bool = True) -> Fact:
    """A configuration file named by the parameters."""
    return _text(required, "kernel config file", ("cat", str(path)))


def parse_release(text: str | None) -> str:
    """``make -s kernelrelease`` -> ``6.12.57-synapse``."""
    return (text or "").strip()


def kernelrelease(make_argv: Sequence[str]) -> Fact:
    """The release a configured build tree names; ``make_argv`` is the tree's ``make ... -s kernelrelease``."""
    return Fact(name="kernelrelease", commands={"release": tuple(str(a) for a in make_argv)},
                parse=lambda o: parse_release(o.get("release")))
