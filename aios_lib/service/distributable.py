"""Phase 6: the distributable form of Synapse OS: the image compressed with zstd, its sha256, and
how to write it to a disk.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from ..core.paths import resolve_in_project
from .image import SynapseImage, manifest


# ---- the distributable ---------------------------------------------------------------------------------
WRITE_NOTE = """Synapse OS: {name}
sha256 ({name}): {sha}
uncompressed: {size_gib:.2f} GiB raw disk image (GPT: ESP, root XFS, ai-data XFS)

Check, then write it to a whole disk (this ERASES the disk; name it by /dev/disk/by-id/...):

    sha256sum -c {name}.sha256
    zstd -dc {name} | sudo dd of=/dev/disk/by-id/<your-disk> bs=4M conv=fsync status=progress

The target machine boots it with UEFI (systemd-boot, no menu). The root file system is read-only
(systemd.volatile=overlay: changes to / vanish at reboot); models and results live on the ai-data
partition at {data_dir}. llama-server answers on {host}:{port} (loopback only{ssh}).
The disk may be larger than the image: the GPT backup header is then not at the end; fix it with
`sudo sfdisk --relocate gpt-bak-std /dev/disk/by-id/<your-disk>` (the partitions are unchanged).
The llama.cpp inside is built for {isa}; the kernel command line is:
    {cmdline}
"""


@dataclass
class Distributable:
    path: Path
    sha256: str | None
    size_bytes: int | None
    image_bytes: int | None
    note: Path
    planned: bool = False

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"**planned**: `{self.path}` (zstd), `{self.path.name}.sha256`, `{self.note.name}`"
        return (f"`{self.path}`: {self.size_bytes / 2**20:.0f} MiB (image {self.image_bytes / 2**30:.2f} GiB), "
                f"sha256 `{self.sha256}`; how to write it: `{self.note}`")


def parse_sha256sum(text: str) -> str | None:
    """Pure: the digest in ``sha256sum FILE`` output. Not a fact: it reads the output of this
    phase's own ``work`` command (the checksum file it ships), not the machine."""
    m = re.match(r"^([0-9a-f]{64})\s", text or "")
    return m.group(1) if m else None


def distributable(run, img: "SynapseImage | Path | None" = None) -> Distributable | str:
    """``<image>.zst`` (zstd, multithreaded), ``<image>.zst.sha256`` and ``WRITE-TO-DISK.txt``."""
    sp = run.params.service
    r = run.runner
    if isinstance(img, SynapseImage):
        if img.skipped:
            return f"not packaged: {img.skipped}"
        img = img.path
    image = Path(img or resolve_in_project(run.params.target.image))
    out = image.with_name(image.name + ".zst")
    r.work(["zstd", "-T0", f"-{sp.zstd_level}", "-f", "-q", str(image), "-o", str(out)],
           note="the distributable image", timeout=3600)
    s = r.work(["sha256sum", out.name], cwd=str(out.parent), note="its checksum")
    sha = parse_sha256sum(s.stdout) if not s.planned else None
    note = image.with_name("WRITE-TO-DISK.txt")
    m = manifest(image).read()
    if sha:
        r.write_file(out.with_name(out.name + ".sha256"), s.stdout, note="sha256sum -c file")
        r.write_file(note, WRITE_NOTE.format(
            name=out.name, sha=sha, size_gib=image.stat().st_size / 2**30, data_dir=sp.data_dir, host=sp.host,
            port=sp.port, ssh="; ssh is not installed" if not sp.ssh else "", isa=sp.image_build,
            cmdline=" ".join(m.get("cmdline") or [])), note="how to write it to a disk")
        d = Distributable(out, sha, out.stat().st_size, image.stat().st_size, note)
        run.record("distributable", {"path": str(out), "sha256": sha, "size_bytes": d.size_bytes,
                                     "image_bytes": d.image_bytes, "note": str(note)})
        return d
    return Distributable(out, None, None, None, note, planned=True)
