"""Phase 2 orchestration: plan order, confirmations, interruption, reruns, and the real build+boot."""
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from aios_lib.system import image, target
from aios_lib.context import open_run
from aios_lib.facts.blockdev import parse_findmnt_targets, parse_losetup_j
from aios_lib.core.journal import read_journal
from aios_lib.params import ParamsError, load_params, parse_params
from aios_lib.core.runner import DestructiveRefused

ROOT = Path(__file__).resolve().parent.parent


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout


def small(tmp_path, confirm=True, **system):
    img = tmp_path / "t.img"
    data = {"schema_version": 1, "target": {"kind": "image", "image": str(img), "image_size": "512M",
                                            "confirm": str(img) if confirm is True else (confirm or "")},
            "system": {"esp_size_mib": 100, "use_image_cache": False, **system}}
    return parse_params(data, "<test>"), img


def test_plan_arch_example_lists_the_install_in_order(tmp_path, monkeypatch):
    """`aios plan 02 --params parameters/example-i7-arch.yaml`: the journal holds the whole install."""
    from aios_lib.cli import main

    out = tmp_path / "outputs"
    monkeypatch.setenv("AIOS_OUTPUTS", str(out))
    assert main(["plan", "02", "--params", "parameters/example-i7-arch.yaml", "--quiet"]) == 0
    journal = next(out.glob("i7-avx2-arch/*/commands.jsonl"))
    entries = read_journal(journal)
    changing = [e for e in entries if e["kind"] != "probe"]
    assert changing and all(e["planned"] for e in changing), "plan mode ran a changing command"
    lines = [e["cmdline"] for e in changing]
    dev = "/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T000000A"

    def at(prefix):
        hits = [i for i, c in enumerate(lines) if c.startswith(prefix)]
        assert hits, f"not planned: {prefix}"
        return hits[0]

    fstab = next(i for i, c in enumerate(lines) if c.startswith("write ") and c.split()[1].endswith("/etc/fstab"))
    order = [at("wipefs -a " + dev), at("parted -s -a optimal " + dev), at("mkfs.fat -F 32"), at("mkfs.xfs -f"),
             at("mount -o noatime " + dev + "-part2"), at("pacstrap -K"), fstab,
             at("systemctl --root="), at("arch-chroot"), at("qemu-system-x86_64")]
    assert order == sorted(order), lines
    pac = lines[at("pacstrap -K")]
    for pkg in ["base", "linux", "linux-firmware", "intel-ucode", "base-devel", "git", "networkmanager", "dracut",
                "zram-generator", "xfsprogs"]:
        assert f" {pkg}" in pac
    assert any("bootctl install" in c for c in lines) and any("kernel-install add" in c for c in lines)
    assert any(c.split()[1].endswith("/efi/loader/loader.conf") for c in lines if c.startswith("write "))
    assert any(c.startswith("systemctl --root=") and " mask " in c and "bluetooth.service" in c for c in lines)
    destructive = [e for e in entries if e["kind"] == "destructive"]
    assert destructive and all("refuses this until target.confirm" in (e["note"] or "") for e in destructive)


@pytest.mark.parametrize("confirm", ["", "/some/other.img"])
def test_destructive_step_refused_and_image_byte_identical(tmp_path, confirm):
    params, img = small(tmp_path, confirm=confirm)
    img.write_bytes(os.urandom(1 << 20))
    before = sha256(img)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    image.validate(run, b)
    image.prepare(run, b)
    with pytest.raises(DestructiveRefused) as e:
        image.partition(run, b)
    assert "target.confirm" in str(e.value)
    assert sha256(img) == before
    assert parse_losetup_j(sh("losetup", "-j", str(img))) == []
    assert not any(e["kind"] == "destructive" for e in read_journal(tmp_path / "run" / "commands.jsonl"))


def test_disk_target_unconfirmed_is_refused(tmp_path):
    params = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/disk/by-id/nvme-absent",
                                                           "confirm": "/dev/disk/by-id/nvme-other"}}, "<t>")
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    image.validate(run, b)
    image.prepare(run, b)
    with pytest.raises(DestructiveRefused, match="nvme-absent"):
        image.partition(run, b)


def test_disk_target_must_be_a_stable_name():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/sdb", "confirm": "/dev/sdb"}},
                     "<t>")
    assert e.value.problems == ["<t>: key `target.device`: '/dev/sdb' is not a stable name; name the disk by "
                                "/dev/disk/by-id/... so the confirmation cannot point at another disk after a reboot"]


def test_mitigations_off_without_trusted_offline_fails_before_anything_runs(tmp_path):
    with pytest.raises(ParamsError) as e:
        small(tmp_path, kernel_cmdline=["mitigations=off"])
    assert "machine.trusted_offline" in str(e.value) and str(e.value).count("\n") == 0
    assert not (tmp_path / "t.img").exists()


def test_invalid_parameter_files_fail_before_anything(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (ROOT / "parameters/image-debian.yaml").read_text()
    bad.write_text(text.replace("mount_options: [noatime]", "mount_options: [noatime, discard=async]"))
    with pytest.raises(ParamsError, match="discard=async"):
        load_params(bad)
    bad.write_text(text.replace("audit=0,", "auditing=0,"))
    with pytest.raises(ParamsError, match="auditing=0"):
        load_params(bad)


def _mounted_under(d):
    return parse_findmnt_targets(sh("findmnt", "-rn", "-o", "TARGET"), str(d))


def test_interrupted_run_releases_everything_and_says_how_to_resume(tmp_path, monkeypatch):
    params, img = small(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    image.validate(run, b)
    image.prepare(run, b)
    image.partition(run, b)
    image.format(run, b)
    image.mount(run, b)
    assert _mounted_under(b.spec.mount_dir) and parse_losetup_j(sh("losetup", "-j", str(img)))

    def boom(*a, **k):
        raise RuntimeError("mirror unreachable (simulated)")

    monkeypatch.setattr(image.bootstrap_mod, "bootstrap", boom)
    with pytest.raises(image.PhaseFailed) as e:
        image.bootstrap(run, b)
    msg = str(e.value)
    assert "mirror unreachable" in msg and "To resume" in msg and "aios run 02" in msg
    assert _mounted_under(b.spec.mount_dir) == []
    assert parse_losetup_j(sh("losetup", "-j", str(img))) == []
    assert b.att.stack is None and b.att.devices is None
    assert target.read_manifest(target.open_target(run)).get("complete") is False  # a rerun rebuilds


def test_leftovers_of_a_killed_run_are_released_by_the_next(tmp_path):
    params, img = small(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    image.validate(run, b)
    image.prepare(run, b)
    image.partition(run, b)
    image.format(run, b)
    image.mount(run, b)
    b.att.stack.items.clear()  # as if the process had been killed: nothing will undo the mounts
    run2 = open_run(params, run_dir=tmp_path / "run2", phase="02")
    b2 = image.start(run2)
    image.validate(run2, b2)
    res = image.prepare(run2, b2)
    assert "released leftovers" in res.detail and "detached /dev/loop" in res.detail
    assert _mounted_under(b.spec.mount_dir) == [] and parse_losetup_j(sh("losetup", "-j", str(img))) == []


def test_plan_mode_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    params, img = small(tmp_path, use_image_cache=True)
    run = open_run(params, run_dir=tmp_path / "run", phase="02", plan=True)
    out = image.build(run)
    assert not img.exists() and not (tmp_path / "cache").exists()  # not even an empty cache folder
    assert out["verify"].planned
    entries = read_journal(tmp_path / "run" / "commands.jsonl")
    assert all(e["planned"] for e in entries if e["kind"] != "probe")
    cmds = [e["cmdline"] for e in entries]
    assert any(c.startswith("debootstrap --variant=minbase") and "--cache-dir=" in c for c in cmds)
    assert any("apt-get install -y --no-install-recommends dracut" in c for c in cmds)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_debian_image_builds_boots_and_every_row_matches(tmp_path, pytestconfig):
    """The real thing: debootstrap (cached), dracut, systemd-boot, a TCG/KVM boot with the guest check.

    Uses parameters/image-debian.yaml with the image in tmp_path. The first run builds (~5 min);
    later runs copy the verified image from ~/.cache/synapse/base-image and boot it (~1-2 min).
    """
    base = load_params(ROOT / "parameters/image-debian.yaml")
    data = base.model_dump(mode="json", exclude={"source_file"})
    img = tmp_path / "synapse-debian.img"
    data["target"].update(image=str(img), confirm=str(img))
    params = parse_params(data, "<image-debian in tmp>")
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    out = image.build(run)
    boot = out["verify"]
    assert not boot.planned and boot.rc == 0 and not boot.timed_out
    assert boot.rows and boot.mismatches == [], boot.table().to_string()
    checks = {r["check"]: r for r in boot.rows}
    assert checks["boot loader"]["in effect"].startswith("systemd-boot")
    assert checks["THP mode"]["in effect"] == "madvise"
    assert "zstd" in checks["zram swap"]["in effect"]
    assert checks["failed units"]["in effect"] == "none"
    assert "root=PARTUUID=" in checks["kernel command line"]["in effect"]
    assert target.read_manifest(target.open_target(run))["complete"] is True
    # keep the serial console of the last verified boot (source of tests/fixtures/image/serial-debian.log)
    # (pytest's cache folder; the test's own folder when the cache plugin is off: -p no:cacheprovider)
    cache = getattr(pytestconfig, "cache", None)
    keep = cache.mkdir("synapse-image") if cache is not None else tmp_path
    (keep / "verify-serial.log").write_text(Path(boot.log).read_text())
    # nothing left mounted or attached
    assert parse_losetup_j(sh("losetup", "-j", str(img))) == []
    # a rerun with the same inputs skips the build and says so
    run2 = open_run(params, run_dir=tmp_path / "run2", phase="02")
    b2 = image.start(run2)
    assert "up to date" in image.validate(run2, b2).state
    before = sha256(img)
    assert image.prepare(run2, b2).detail.endswith("build steps skipped")
    assert image.partition(run2, b2).status == "skipped" and image.finish(run2, b2).status == "skipped"
    assert sha256(img) == before


def test_notebook_02_plans_top_to_bottom_with_the_default_parameters(tmp_path, monkeypatch):
    """default.yaml touches no disk: the notebook says so and plans the blueprint's machine instead."""
    from aios_lib.execute import run_phases
    import nbformat

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    outcome = run_phases("parameters/default.yaml", ["02"], plan=True, log_output=False)
    assert outcome.ok, outcome.phases
    nb = nbformat.read(outcome.run_dir / "02_base_system.ipynb", as_version=4)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "target.kind is 'none'" in text and "pacstrap" in text and "planned" in text
    assert (outcome.run_dir / "02_base_system.html").exists()


def _debian_params(tmp_path):
    base = load_params(ROOT / "parameters/image-debian.yaml")
    data = base.model_dump(mode="json", exclude={"source_file"})
    img = tmp_path / "synapse-debian.img"
    data["target"].update(image=str(img), confirm=str(img))
    return parse_params(data, "<image-debian in tmp>"), img


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_kernel_upgrade_hook_keeps_the_command_line(tmp_path):
    """Debian's kernel postinst hook (zz-systemd-boot -> kernel-install) rewrites the boot entry from
    /etc/kernel/cmdline: the parameters' command line survives a kernel upgrade. Also exercises the
    reuse API of later phases: open an existing image, mount it, work in a chroot."""
    params, img = _debian_params(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    warm = target.cached_image(image.CACHE_KIND, image.build_key(params)) is not None
    out = image.build(run, verify=False)  # from the verified cache when warm
    if warm:  # a verified image with the same inputs is copied, not rebuilt, and the steps say so
        assert "copied the verified image" in out["prepare"].detail
        assert out["bootstrap"].status == "skipped" and "cache" in out["bootstrap"].detail
    run2 = open_run(params, run_dir=tmp_path / "run2", phase="02")
    spec = target.open_target(run2)
    with target.mounted(run2.runner, spec, write_back=False) as m:
        root = m.root
        wanted = (root / "etc/kernel/cmdline").read_text().split()
        entries = list((root / "efi/loader/entries").glob("synapse-*.conf"))
        assert len(entries) == 1
        kver = entries[0].name.removeprefix("synapse-").removesuffix(".conf")
        entries[0].unlink()
        run2.runner.change(["env", "SYSTEMD_RELAX_ESP_CHECKS=1", "/etc/kernel/postinst.d/zz-systemd-boot", kver,
                         f"/boot/vmlinuz-{kver}"], root=root, timeout=900)
        from aios_lib.facts.boot import parse_bls_entry

        entry = parse_bls_entry(entries[0].read_text())
        assert entry["options"].split() == wanted
        assert entry["initrd"] == f"/synapse/{kver}/initrd.img-{kver}"  # Debian's 85-initrd.install
        assert "root=PARTUUID=" in entry["options"] and "audit=0" in wanted
    assert parse_losetup_j(sh("losetup", "-j", str(img))) == []
    assert _mounted_under(spec.mount_dir) == []
