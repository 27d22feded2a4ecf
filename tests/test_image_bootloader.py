"""Boot loader read-back on an ESP tree laid out as bootctl + kernel-install leave it."""
from pathlib import Path

from aios_lib.facts.boot import parse_bls_entry
from aios_lib.system.bootloader import loader_conf, read_back
from aios_lib.system.cmdline import Cmdline

KVER = "6.1.0-50-amd64"


def esp_tree(root: Path, options: str, timeout: str = "0"):
    efi = root / "efi"
    files = {
        "EFI/systemd/systemd-bootx64.efi": "x", "EFI/BOOT/BOOTX64.EFI": "x",
        f"synapse/{KVER}/linux": "k", f"synapse/{KVER}/initrd.img-{KVER}": "i",
        "loader/loader.conf": loader_conf().replace("timeout 0", f"timeout {timeout}"),
        f"loader/entries/synapse-{KVER}.conf": (
            "# Boot Loader Specification type#1 entry\ntitle      Debian GNU/Linux 12 (bookworm)\n"
            f"version    {KVER}\nsort-key   debian\noptions    {options}\n"
            f"linux      /synapse/{KVER}/linux\ninitrd     /synapse/{KVER}/initrd.img-{KVER}\n"),
    }
    for rel, text in files.items():
        (efi / rel).parent.mkdir(parents=True, exist_ok=True)
        (efi / rel).write_text(text)


def test_read_back_matches(runner, tmp_path):
    c = Cmdline(["root=PARTUUID=ab", "rw", "audit=0"], ["a warning"])
    esp_tree(tmp_path, str(c))
    res = read_back(runner, tmp_path, c, KVER)
    assert res.ok, res.table().to_string()
    assert res.entry["linux"] == f"/synapse/{KVER}/linux" and res.warnings == ["a warning"]
    assert "EFI/BOOT/BOOTX64.EFI" in res.esp_files


def test_read_back_reports_wrong_options_and_timeout(runner, tmp_path):
    esp_tree(tmp_path, "root=PARTUUID=ab rw auditing=0", timeout="5")
    res = read_back(runner, tmp_path, Cmdline(["root=PARTUUID=ab", "rw", "audit=0"]), KVER)
    bad = {c["item"] for c in res.checks if not c["ok"]}
    assert bad == {"entry options", "loader.conf timeout"}


def test_loader_conf_and_entry_parse():
    assert "timeout 0" in loader_conf() and "editor no" in loader_conf()
    e = parse_bls_entry("title X\noptions a=1\noptions b\n")
    assert e == {"title": "X", "options": "a=1 b"}
