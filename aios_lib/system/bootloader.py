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
from ..core.runner import Runner
from ..facts import boot
from ..facts.base import gather

#: the entry token of every Synapse target (/etc/kernel/entry-token): entries are
#: ``loader/entries/<token>-<kver>.conf``, kernels ``<token>/<kver>/linux`` on the ESP
ENTRY_TOKEN = "synapse"
RELAX = ["env", "SYSTEMD_RELAX_ESP_CHECKS=1"]


# ---- the text of loader.conf and of boot entries (pure; facts/boot.py reads them) -------------
def loader_conf(token: str = ENTRY_TOKEN, timeout: int = 0) -> str:
    return (f"# Synapse: no menu, boot the newest {token} entry (blueprint 1.1)\n"
            f"default {token}-*\ntimeout {timeout}\neditor no\nconsole-mode keep\n")


def loader_default(conf_text: str, entry_name: str, first: bool = False) -> str:
    """Pure: loader.conf with ``default`` set to ``entry_name``, the other lines kept in order.

    The line goes before the first line that is not a comment (so a leading comment stays on
    top), or with ``first`` at the very top. systemd-boot reads both the same."""
    lines = [ln for ln in (conf_text or "").splitlines() if not re.match(r"^\s*default\s", ln)]
    if first:
        return f"default {entry_name}\n" + "\n".join(lines).strip("\n") + "\n"
    at = next((i for i, ln in enumerate(lines) if not ln.startswith("#")), len(lines))
    lines.insert(at, f"default {entry_name}")
    return "\n".join(lines) + "\n"


def with_extra_tokens(tokens: list[str], extra: list[str]) -> list[str]:
    """Pure: ``tokens`` plus those of ``extra`` whose names (before ``=``) are not there yet."""
    names = {t.split("=", 1)[0] for t in tokens}
    return tokens + [t for t in extra if t.split("=", 1)[0] not in names]


def boot_entry(title: str, release: str, root_spec: str, cmdline: list[str], initrd: bool = True,
               token: str = ENTRY_TOKEN) -> str:
    """A systemd-boot Type #1 entry (paths relative to the ESP), laid out as kernel-install does."""
    lines = [f"title   {title} ({release})", f"version {release}", f"linux   /{token}/{release}/linux"]
    if initrd:
        lines.append(f"initrd  /{token}/{release}/initrd")
    lines.append("options " + " ".join([f"root={root_spec}", *cmdline]))
    return "\n".join(lines) + "\n"


def entry_with_options(entry_text: str, extra: list[str]) -> str:
    """Pure: the BLS entry with ``extra`` appended to its ``options`` line (tokens already there,
    by name, are not repeated)."""
    out, done = [], False
    for ln in entry_text.splitlines():
        if ln.startswith("options") and not done:
            ln, done = "options " + " ".join(with_extra_tokens(ln.split()[1:], extra)), True
        out.append(ln)
    if not done and extra:
        out.append("options " + " ".join(extra))
    return "\n".join(out) + "\n"


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
    kver = kver or "<kver>"  # a plan knows no kernel version yet: say so rather than "None"
    entry_file = efi / "loader" / "entries" / f"{token}-{kver}.conf"
    esp = gather(runner, boot.esp_dir(efi, entry_file.name))
    entry, conf, files, have_conf = esp["entry"], esp["loader_conf"], esp["files"], esp["loader"]
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
        for c in checks:  # nothing was read back: "planned", which is neither a pass nor a failure
            c["ok"], c["in effect"] = "planned", "(planned)"
    return BootloaderResult(None if kver == "<kver>" else kver, str(cmdline), str(entry_file), entry, conf, files, staged,
                            list(cmdline.warnings), checks)


def _row(item, requested, actual) -> dict:
    if isinstance(requested, str) and requested.endswith("*"):  # a pattern: any file with that prefix
        return {"item": item, "requested": requested, "in effect": actual,
                "ok": bool(actual) and actual.startswith(requested[:-1])}
    if isinstance(actual, bool):
        return {"item": item, "requested": requested, "in effect": requested if actual else None, "ok": actual}
    return {"item": item, "requested": requested, "in effect": actual, "ok": actual == requested}


def copy_staged_esp(runner: Runner, staged: Path, esp_device: str, what: str) -> list[str]:
    """Copy the staged ESP tree onto the FAT partition with mtools (no mount), check the FAT, and
    return what it now holds."""
    top = sorted(p for p in (staged.iterdir() if staged.exists() else []))
    srcs = [str(p) for p in top] or [str(staged / "EFI"), str(staged / "loader"), str(staged / ENTRY_TOKEN)]
    runner.destructive(["mcopy", "-s", "-Q", "-o", "-i", esp_device, *srcs, "::/"], device=what,
                       env={"MTOOLS_SKIP_CHECK": "1"}, note="staged ESP -> FAT partition (no vfat driver needed)")
    fat = gather(runner, boot.fat_check(esp_device))
    if not fat["ok"] and not runner.plan:
        raise RuntimeError(f"fsck.fat -n {esp_device} found errors after copying the ESP:\n{fat['report'].strip()}")
    return gather(runner, boot.esp_listing(esp_device))
