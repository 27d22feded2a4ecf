"""Value types of the parameter model: checked and normalised once, when the file loads.

Each validator returns the value the phases use, so no phase checks or normalises it again:

* :data:`KernelCmdline`: a list of kernel command-line tokens, each a known parameter with a
  valid value (:func:`aios_lib.params.kernel_cmdline.check_tokens`); the blueprint's
  ``auditing=0``/``logic=no`` are refused with the fix. ``mitigations=off`` is kept with a warning.
* :data:`MountOptions`: the root's mount options, normalised for the section's ``filesystem``
  (:func:`aios_lib.params.mount_options.normalise_mount_options`: ``nodiratime`` dropped next to
  ``noatime``, duplicates dropped, each with a warning). The section must declare ``filesystem``
  before the field, so its value is known here.

Warnings are kept on the section (:func:`aios_lib.params.base.note_warnings`) and reach
:attr:`aios_lib.params.Params.warnings`.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ValidationInfo

from .base import note_warnings
from .kernel_cmdline import check_tokens
from .mount_options import normalise_mount_options


def kernel_cmdline(tokens: list[str], info: ValidationInfo) -> list[str]:
    """The tokens as given, once each is known; raises ValueError (the error line names the key)."""
    note_warnings(info, check_tokens(tokens))
    return list(tokens)


def mount_options(options: list[str], info: ValidationInfo) -> list[str]:
    """The options normalised for ``info.data["filesystem"]``; raises ValueError for one it does not take."""
    if "filesystem" not in info.data:  # the filesystem itself is invalid: that is the error to show
        return options
    normalised, warnings = normalise_mount_options(info.data["filesystem"], options)
    note_warnings(info, warnings)
    return normalised


def positive_size(text: str) -> str:
    """``4G``, ``512M``, ``1024K`` or bytes; more than zero (a zero-sized image, partition or guest
    memory is refused by truncate, parted and QEMU later)."""
    import re

    m = re.fullmatch(r"([0-9]+)([KMGT]?)", str(text).strip())
    if not m:
        raise ValueError("not a size: write a whole number with K, M, G or T, e.g. 4G or 512M")
    if int(m.group(1)) == 0:
        raise ValueError("a size of zero: give a positive size, e.g. 4G or 512M")
    return str(text).strip()


KernelCmdline = Annotated[list[str], AfterValidator(kernel_cmdline)]
PositiveSize = Annotated[str, AfterValidator(positive_size)]
MountOptions = Annotated[list[str], AfterValidator(mount_options)]


def build_jobs(v: int | str) -> int | str:
    """Parallel build jobs: ``auto`` (one per CPU) or a count of at least 1."""
    if v != "auto" and v < 1:
        raise ValueError("a build needs at least 1 job (or auto)")
    return v


#: ``jobs`` of the llama.cpp and kernel builds
BuildJobs = Annotated[int | Literal["auto"], AfterValidator(build_jobs)]
