"""systemd-boot on the ESP, a BLS entry with a validated command line (blueprint 1.1 and 5.2).

* ``bootctl install --no-variables``: no EFI variables are written at build time (there are none
  in a chroot, and an image is booted elsewhere); firmware finds the removable fallback path
  ``EFI/BOOT/BOOTX64.EFI`` that bootctl installs alongside ``EFI/systemd/``.
* ``/etc/kernel/cmdline`` + ``/etc/kernel/entry-token`` + ``/etc/kernel/install.conf``
  (``layout=bls``): ``kernel-install add`` writes the kernel, its initrd and the entry
  ``loader/entries/<token>-<kver>.conf``. Debian's kernel postinst hook runs the same
  ``kernel-install``, so the command line survives kernel upgrades.
* ``loader.conf``: ``timeout 0`` (no menu) and ``editor no``; the default is the token's newest entry.

When the build machine cannot mount FAT (no vfat driver), the ESP is staged in a tmpfs mounted
at ``/efi`` inside the target (bootctl refuses a directory that is not a mount point) and copied
onto the FAT partition with mtools afterwards: the way image builders do it without mounting.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .cmdline import Cmdline
from ..core.runner import CommandResult, Runner

ENTRY_TOKEN = "synapse"
RELAX = ["env", "SYSTEMD_RELAX_ESP_CHECKS=1"]


def loader_conf(token: str = ENTRY_TOKEN, timeout: int = 0) -> str:
    return (f"# Synapse: no menu, boot the newest {token} entry (blueprint 1.1)\n"
            f"default {token}-*\ntimeout {timeout}\neditor no\nconsole-mode keep\n")


def parse_bls_entry(text: str) -> dict[str, str]:
    """Pure: a BLS entry as {key: value} (``options`` lines joined)."""
    out: dict[str, str] = {}
    for ln in (text or "").splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        k, _, v = ln.partition(" ")
        v = v.strip()
        out[k] = (out[k] + " " + v) if k in out and k == "options" else v
    return out


def parse_mdir(text: str) -> list[str]:
    """Pure: file and directory names from `mdir -b -/ -i IMG ::/` (one path per line)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("::/")]


@dataclass
class BootloaderResult:
    kernel: str | None
    cmdline: str
    entry_file: str | None
    entry: dict
    loader_conf: str
    esp_files: list[str] = field(default_factory=list)
    staged: bool = True
    warnings: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.checks, columns=["item", "requested", "in effect", "ok"])

    def _repr_html_(self) -> str:
        warn = "".join(f"<p><b>warning:</b> {w}</p>" for w in self.warnings)
        return warn + self.table().to_html(index=False)


def write_kernel_config(runner: Runner, root: Path, cmdline: Cmdline, token: str = ENTRY_TOKEN) -> None:
    runner.write_file(root / "etc/kernel/cmdline", str(cmdline) + "\n", note="kernel command line for kernel-install")
    runner.write_file(root / "etc/kernel/entry-token", token + "\n")
    runner.write_file(root / "etc/kernel/install.conf", "layout=bls\n")


def install(runner: Runner, root: Path, cmdline: Cmdline, kver: str | None, distro: str,
            token: str = ENTRY_TOKEN) -> BootloaderResult:
    """bootctl + kernel-install + loader.conf into ``root/efi`` (mounted or staged), read back."""
    write_kernel_config(runner, root, cmdline, token)
    runner.change([*RELAX, "bootctl", "install", "--esp-path=/efi", f"--entry-token=literal:{token}",
                   "--no-variables"], root=root, note="systemd-boot onto the ESP, fallback path included")
    k = kver or "<kver>"
    kernel_image = f"/boot/vmlinuz-{k}" if distro == "debian" else f"/usr/lib/modules/{k}/vmlinuz"
    argv = [*RELAX, "kernel-install", "add", k, kernel_image]
    if distro == "debian":
        argv.append(f"/boot/initrd.img-{k}")
    runner.change(argv, root=root, timeout=900, note="kernel + initrd + BLS entry from /etc/kernel/cmdline")
    conf = loader_conf(token)
    runner.write_file(root / "efi/loader/loader.conf", conf, note="loader.conf: timeout 0")
    return read_back(runner, root, cmdline, kver, token)


def read_back(runner: Runner, root: Path, cmdline: Cmdline, kver: str | None, token: str = ENTRY_TOKEN,
              staged: bool = True) -> BootloaderResult:
    """What the ESP holds: loader, fallback loader, loader.conf, the entry and its options."""
    efi = root / "efi"
    entry_file = efi / "loader" / "entries" / f"{token}-{kver}.conf"

    def cat(p: Path) -> str | None:
        r = runner.probe(["cat", str(p)], check=False, quiet=True)
        return r.stdout if r.rc == 0 else None

    entry = parse_bls_entry(cat(entry_file) or "")
    conf = cat(efi / "loader/loader.conf") or ""
    listing = runner.probe(["find", str(efi), "-type", "f"], check=False, quiet=True).stdout
    files = sorted(str(Path(p).relative_to(efi)) for p in listing.split() if p.startswith(str(efi)))
    have_conf = dict(re.findall(r"^(\w[\w-]*)\s+(.*)$", conf, re.M))
    checks = [
        _row("systemd-boot", "EFI/systemd/systemd-bootx64.efi", "EFI/systemd/systemd-bootx64.efi" in files),
        _row("fallback loader", "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/BOOTX64.EFI" in files),
        _row("loader.conf timeout", "0", have_conf.get("timeout")),
        _row("loader.conf editor", "no", have_conf.get("editor")),
        _row("entry", f"loader/entries/{token}-{kver}.conf", f"loader/entries/{token}-{kver}.conf" if entry else None),
        _row("entry options", str(cmdline), entry.get("options")),
        _row("kernel on ESP", f"{token}/{kver}/linux", next((f for f in files if f == f"{token}/{kver}/linux"), None)),
        _row("initrd on ESP", f"{token}/{kver}/initrd*", next((f for f in files if f.startswith(f"{token}/{kver}/initrd")), None)),
    ]
    if runner.plan and not entry:
        for c in checks:
            c["ok"], c["in effect"] = True, "(planned)"
    return BootloaderResult(kver, str(cmdline), str(entry_file), entry, conf, files, staged,
                            list(cmdline.warnings), checks)


def _row(item, requested, actual) -> dict:
    if isinstance(requested, str) and requested.endswith("*"):  # a pattern: any file with that prefix
        return {"item": item, "requested": requested, "in effect": actual,
                "ok": bool(actual) and actual.startswith(requested[:-1])}
    if isinstance(actual, bool):
        return {"item": item, "requested": requested, "in effect": requested if actual else None, "ok": actual}
    return {"item": item, "requested": requested, "in effect": actual, "ok": actual == requested}


def copy_staged_esp(runner: Runner, staged: Path, esp_device: str, what: str) -> list[CommandResult]:
    """Copy the staged ESP tree onto the FAT partition with mtools (no mount), then check it."""
    top = sorted(p for p in (staged.iterdir() if staged.exists() else []))
    srcs = [str(p) for p in top] or [str(staged / "EFI"), str(staged / "loader"), str(staged / ENTRY_TOKEN)]
    env = {"MTOOLS_SKIP_CHECK": "1"}
    out = [runner.destructive(["mcopy", "-s", "-Q", "-o", "-i", esp_device, *srcs, "::/"], device=what, env=env,
                              note="staged ESP -> FAT partition (no vfat driver needed)")]
    out.append(runner.probe(["fsck.fat", "-n", esp_device], check=not runner.plan))
    out.append(runner.probe(["mdir", "-/", "-b", "-i", esp_device, "::/"], env=env, check=False, quiet=True))
    return out
