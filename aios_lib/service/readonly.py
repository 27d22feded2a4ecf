"""Phase 6: read-only root (blueprint 9) with a persistent /var/ai-data partition.

The root stays on disk, untouched: ``systemd.volatile=overlay`` makes the initrd mount a tmpfs
overlay over it, so every write to ``/`` lands in RAM and is gone at the next boot. That option is
implemented by ``systemd-volatile-root``, which only a systemd-based initrd runs: Debian's
initramfs-tools ignores it silently (the root stays writable), dracut honours it; the base system
builds its initrd with dracut and phase 6 checks it is really in there
(:func:`aios_lib.facts.rootfs.initrd_listing`).

What must survive (models, results) lives on a third GPT partition ``ai-data`` (XFS) mounted at
``/var/ai-data`` from fstab. The image gets a boot entry of its own for the read-only mode
(``ro systemd.volatile=overlay``) and it becomes the default; the writable entry stays for
maintenance. systemd-boot's ``timeout 0`` + ``editor no`` means a choice is made by switching the
default in ``loader.conf`` (from the host: ``mcopy -o``), not at the boot menu.

The ESP is FAT: this development machine's kernel cannot mount it, so entries are read with
``mtype`` and written with ``mcopy`` (mtools), never through a FUSE FAT driver.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..facts import blockdev, boot
from ..facts.base import gather
from ..facts.boot import parse_bls, parse_loader_default, root_ref_of
from ..system.bootloader import loader_default

#: GPT type "Linux filesystem data"
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DATA_LABEL = "ai-data"
RO_ENTRY = "synapse-ro.conf"
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


# ---- the data partition ---------------------------------------------------------------------
def find_data_partition(parts: list[dict]) -> tuple[int, dict] | None:
    for i, p in enumerate(parts, 1):
        if p.get("name") == DATA_LABEL:
            m = re.search(r"(\d+)$", p.get("node", ""))
            return (int(m.group(1)) if m else i), p
    return None


def size_bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", size)
    if not m:
        raise ValueError(f"size {size!r}: write e.g. 1G or 512M")
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]


@dataclass
class DataPartition:
    number: int
    size_bytes: int
    added: bool
    label: str = DATA_LABEL


def add_data_partition(run, image: Path, device: str) -> DataPartition:
    """Grow the image file by ``service.data_size`` and append the ``ai-data`` partition (once).

    ``device`` is what the confirmation names (``target.what``). Steps: ``truncate -s +SIZE``, move
    the GPT backup header to the new end (``sfdisk --relocate gpt-bak-std``), append a partition
    over the free space (``sfdisk --append``).
    """
    r = run.runner
    size = run.params.service.data_size
    parts = gather(r, blockdev.partitions(str(image)))
    hit = find_data_partition(parts)
    if hit:
        n, p = hit
        return DataPartition(n, int(p.get("size", 0)) * 512, added=False)
    r.destructive(["truncate", "-s", f"+{size}", str(image)], device=device, note="room for /var/ai-data")
    r.destructive(["sfdisk", "--relocate", "gpt-bak-std", str(image)], device=device,
                  note="the GPT backup header moves to the new end of the image")
    r.destructive(["sfdisk", "--append", "--no-reread", str(image)], device=device,
                  input=f'type={LINUX_FS_GUID}, name="{DATA_LABEL}"\n', note="partition for /var/ai-data")
    hit = find_data_partition(gather(r, blockdev.partitions(str(image))))
    n = hit[0] if hit else max(len(parts), 2) + 1
    return DataPartition(n, size_bytes(size), added=True)


def fstab_line(uuid: str, data_dir: str = "/var/ai-data", fstype: str = "xfs") -> str:
    # nofail: a missing data disk must not drop the appliance into emergency mode; the service's
    # RequiresMountsFor= then keeps llama-server from starting without its models
    return f"UUID={uuid} {data_dir} {fstype} defaults,noatime,nofail 0 2\n"


def add_fstab_line(fstab_text: str, line: str, data_dir: str) -> str:
    """fstab with ``line`` as the only entry for ``data_dir`` (idempotent)."""
    kept = [ln for ln in fstab_text.splitlines() if not (len(ln.split()) > 1 and ln.split()[1] == data_dir)]
    return "\n".join(kept).rstrip("\n") + "\n" + line


# ---- the boot entry -------------------------------------------------------------------------------
def volatile_entry_text(entry_text: str, options: list[str] | None = None) -> str:
    """The read-only variant of a BLS entry: ``rw`` -> ``ro`` and ``systemd.volatile=overlay``
    (or exactly ``options``, e.g. :func:`aios_lib.service.hardening.security_cmdline`'s words)."""
    lines = []
    for k, v in parse_bls(entry_text):
        if k == "title":
            v = f"{v} (read-only root)"
        elif k == "options" and options is not None:
            v = " ".join(options)
        elif k == "options":
            words = ["ro" if w == "rw" else w for w in v.split() if w != "systemd.volatile=overlay"]
            if "ro" not in words:
                words.append("ro")
            v = " ".join(words + ["systemd.volatile=overlay"])
        elif k == "sort-key":
            v = f"{v}-ro"
        lines.append(f"{k} {v}")
    if not any(k == "options" for k, _ in parse_bls(entry_text)):
        raise ValueError("the boot entry has no `options` line to add systemd.volatile=overlay to")
    return "\n".join(lines) + "\n"


@dataclass
class BootEntry:
    source: str
    name: str
    text: str
    default: str

    def _repr_markdown_(self) -> str:
        return f"`/loader/entries/{self.name}` (from `{self.source}`, default: `{self.default}`)\n\n```\n{self.text}```"


def install_volatile_entry(run, esp: str, make_default: bool = True) -> BootEntry:
    """Read the default entry from the ESP partition ``esp`` (a block device or ``IMG@@OFFSET``),
    write its read-only twin next to it and make that the default. Plan-safe."""
    r = run.runner
    loader = gather(r, boot.esp_loader(esp))
    default = loader["default"]
    names = [n for n in loader["entries"] if n != RO_ENTRY]
    source = default if default in names else (names[0] if names else None)
    if source is None:
        if run.plan:
            return BootEntry("<default entry>", RO_ENTRY, "(planned)\n", RO_ENTRY)
        raise RuntimeError(f"no boot entry found on {esp} under /loader/entries")
    text = volatile_entry_text(gather(r, boot.esp_entry(esp, source)))
    stage = Path(tempfile.mkdtemp(prefix="synapse-esp-"))
    r.write_file(stage / RO_ENTRY, text, note="staged for mcopy")
    r.destructive(["mcopy", "-o", "-i", esp, str(stage / RO_ENTRY), f"::/loader/entries/{RO_ENTRY}"],
                  device=run.params.target.what or esp, env=MTOOLS_ENV, note="read-only boot entry")
    new_default = default or source
    if make_default:
        r.write_file(stage / "loader.conf", loader_default(loader["loader_conf"], RO_ENTRY, first=True),
                     note="staged for mcopy")
        r.destructive(["mcopy", "-o", "-i", esp, str(stage / "loader.conf"), "::/loader/loader.conf"],
                      device=run.params.target.what or esp, env=MTOOLS_ENV, note="boot the read-only entry by default")
        new_default = RO_ENTRY
    if "@@" not in esp:
        gather(r, boot.fat_check(esp))
    entry = BootEntry(source, RO_ENTRY, text, new_default)
    run.record("boot_entry", {"source": source, "name": RO_ENTRY, "text": text, "default": new_default})
    return entry


def install_volatile_entry_dir(run, efi: Path, options_for=None, make_default: bool = True) -> BootEntry:
    """Like :func:`install_volatile_entry` on a directory holding the ESP's files (mounted, or
    staged by the base phase and copied back with mtools). ``options_for(root_ref)`` gives the
    entry's words (default: the source entry's, ``ro`` + ``systemd.volatile=overlay``)."""
    r = run.runner
    efi = Path(efi)
    conf_path = efi / "loader/loader.conf"
    conf = conf_path.read_text() if conf_path.exists() else ""
    default = parse_loader_default(conf)
    entries = sorted(p.name for p in (efi / "loader/entries").glob("*.conf") if p.name != RO_ENTRY) \
        if (efi / "loader/entries").is_dir() else []
    source = default if default in entries else (entries[0] if entries else None)
    if source is None:
        if run.plan:
            return BootEntry("<default entry>", RO_ENTRY, "(planned)\n", RO_ENTRY)
        raise RuntimeError(f"no boot entry under {efi}/loader/entries")
    src_text = (efi / "loader/entries" / source).read_text()
    options = options_for(root_ref_of(src_text)) if options_for else None
    text = volatile_entry_text(src_text, options)
    r.write_file(efi / "loader/entries" / RO_ENTRY, text, note="read-only root boot entry")
    new_default = default or source
    if make_default:
        r.write_file(conf_path, loader_default(conf, RO_ENTRY, first=True), note="boot the read-only entry by default")
        new_default = RO_ENTRY
    run.record("boot_entry", {"source": source, "name": RO_ENTRY, "text": text, "default": new_default})
    return BootEntry(source, RO_ENTRY, text, new_default)


# ---- the double boot ----------------------------------------------------------------------------------
def persistence_rows(first: dict, second: dict) -> list[dict]:
    """Requested vs seen over two boots of the same disk: the first writes a marker to ``/`` and
    one to /var/ai-data; the second must find only the data marker."""
    b1 = first.get("data_marker_written")
    rows = [
        {"check": "boot 1: / is an overlay (volatile)", "requested": "overlay",
         "in effect": first.get("root_fstype"), "ok": first.get("root_fstype") == "overlay"},
        {"check": "boot 1: wrote markers to / and /var/ai-data", "requested": "written",
         "in effect": "written" if first.get("root_marker_written") and b1 else "not written",
         "ok": bool(first.get("root_marker_written") and b1)},
        {"check": "boot 2: a different boot", "requested": "new boot id",
         "in effect": second.get("begin", "").split("boot_id=")[-1],
         "ok": bool(second.get("begin")) and second.get("begin", "").split("boot_id=")[-1] != first.get("begin", "").split("boot_id=")[-1]},
        {"check": "boot 2: file written to / is gone", "requested": "absent",
         "in effect": second.get("root_marker_before"), "ok": second.get("root_marker_before") == "absent"},
        {"check": "boot 2: file in /var/ai-data stays", "requested": b1,
         "in effect": second.get("data_marker_before"), "ok": bool(b1) and second.get("data_marker_before") == b1},
    ]
    return rows
