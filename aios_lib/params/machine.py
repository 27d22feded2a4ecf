"""Which machine a parameter file describes, and which disk (if any) it may write."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Section
from .types import PositiveSize


class Machine(Section):
    #: folder name under outputs/; "auto" takes the host name
    name: str = Field("auto", pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    #: the machine runs on a trusted, offline network: only then may mitigations=off be used
    trusted_offline: bool = False


class Target(Section):
    """What the install phases write to.

    ``none`` touches no disk (the default). ``image`` builds a disk image file attached to a loop
    device. ``disk`` erases a real block device, named by ``/dev/disk/by-id/``. ``image`` and ``disk``
    both need ``confirm`` to repeat the image path or the device path exactly before any destructive
    step runs.
    """

    kind: Literal["none", "image", "disk"] = "none"
    #: disk: the stable path of the block device, e.g. /dev/disk/by-id/nvme-Samsung_SSD_980_...
    device: str | None = None
    #: image: the image file (relative paths are under the project root)
    image: Path | None = None
    #: image: size of a new image file (truncate syntax)
    image_size: PositiveSize = "4G"
    #: must equal `device` (disk) or `image` (image) for destructive steps to run
    confirm: str = ""

    @model_validator(mode="after")
    def _needs_what_it_writes(self):
        if self.kind == "disk":
            if not self.device:
                raise ValueError("target.kind is 'disk' but target.device is empty: name the disk "
                                 "by /dev/disk/by-id/...")
            if not self.device.startswith("/dev/disk/by-id/"):
                raise ValueError(f"key `target.device`: {self.device!r} is not a stable name; name the disk by "
                                 "/dev/disk/by-id/... so the confirmation cannot point at another disk after a reboot")
        if self.kind == "image" and not self.image:
            raise ValueError("target.kind is 'image' but target.image is empty: give the image file path")
        return self

    @property
    def what(self) -> str | None:
        """The path a confirmation must repeat."""
        if self.kind == "disk":
            return self.device
        if self.kind == "image":
            return str(self.image)
        return None

    @property
    def confirmed(self) -> bool:
        return bool(self.what) and self.confirm == self.what
