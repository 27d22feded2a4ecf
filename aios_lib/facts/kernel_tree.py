"""What a kernel build starts from and what it reports: a base configuration's text (the running
kernel's ``/proc/config.gz``, Debian's ``linux-config-<version>`` package, a file) and the release a
configured build tree names (``make -s kernelrelease``).

The configuration text is copied into the build folder as it is (``.config`` is then parsed by
:func:`aios_lib.kernel.kconfig.parse_config`, the file-format library): these are
:func:`aios_lib.facts.files.read` facts. ``required``: a real run stops at a failed read (the phase
cannot go on without its base); a plan lists the read and goes on (None).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import files
from .base import Fact


def running_config(required: bool = True) -> Fact:
    """The running kernel's configuration (``CONFIG_IKCONFIG_PROC``)."""
    return files.read(("zcat", "/proc/config.gz"), "running kernel config", required)


def distro_config(xz: str | Path, required: bool = True) -> Fact:
    """A Debian kernel flavour's configuration (``/usr/src/linux-config-<v>/config.<flavour>.xz``)."""
    return files.read(("xz", "-dc", str(xz)), "distribution kernel config", required)


def config_file(path: str | Path, required: bool = True) -> Fact:
    """A configuration file named by the parameters."""
    return files.text(path, required)


def parse_release(text: str | None) -> str:
    """``make -s kernelrelease`` -> ``6.12.57-synapse``."""
    return (text or "").strip()


def kernelrelease(make_argv: Sequence[str]) -> Fact:
    """The release a configured build tree names; ``make_argv`` is the tree's ``make ... -s kernelrelease``."""
    return Fact(name="kernelrelease", commands={"release": tuple(str(a) for a in make_argv)},
                parse=lambda o: parse_release(o.get("release")))
