"""Synapse OS end to end: build the image from parameters/synapse-os.yaml, boot a copy twice under
QEMU, check every row, pack it. Slow (TCG boots); the image is cached by its inputs."""
import hashlib
import subprocess
from pathlib import Path

import pytest

from aios_lib.service import boot_check, distributable, image
from aios_lib.context import open_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_synapse_image_boots_into_a_serving_model(tmp_path):
    run = open_run(str(ROOT / "parameters/synapse-os.yaml"), run_dir=tmp_path / "run", plan=False, phase="06")
    img = image.build_image(run)
    assert img.path.exists(), img.steps
    m = image.manifest(img.path).read()
    assert m.get("complete") and m.get("key") == img.key
    # verify/security ran inside the image tree when it was built; the manifest keeps their rows,
    # so they are asserted on a cache hit too
    checked = m["units_in_image"]
    assert [c["unit"] for c in checked] == ["llama-server.service"]
    for c in checked:
        assert c["verify"] == "passes", c["problems"]
        assert c["OK or better"] is True, (c["exposure"], c["level"])
    assert m["initrd_volatile"] is True, "the initrd lacks systemd-volatile-root: systemd.volatile=overlay would be ignored"
    if img.checks is not None:  # freshly built: the manifest holds what this build checked
        assert checked == [{**c.row(), "problems": c.verify.problems} for c in img.checks.attrs["checks"]]

    checked = boot_check.verify_image(run, img)
    first, double = checked.first, checked.double
    print(first.table().to_string())
    print(double.table().to_string())
    bad = [r for r in first.rows if not r["ok"] and r.get("kind") != "goal"]
    assert not bad, bad
    assert first.ok
    assert first.report["syn_active"] == "active"
    assert first.report["syn_sched_policy"] == boot_check.SCHED_BATCH
    # idle CPU is measured and shown; the blueprint's < 0.1 % is a goal, reported (not asserted:
    # under TCG emulation the guest's own timer work alone is ~0.2 %)
    assert first.idle is not None and first.idle.ticks > 0 and first.idle_top
    print(f"idle CPU {first.idle.busy_pct:.3f} % over {first.idle.window_s} s; top: {first.idle_top[:6]}")
    # read-only root: the file written to / in boot 1 is gone in boot 2, the one in /var/ai-data stays
    assert double.ok, double.rows

    d = distributable.distributable(run, img)
    assert d.sha256 == hashlib.sha256(d.path.read_bytes()).hexdigest()
    subprocess.run(["zstd", "-t", "-q", str(d.path)], check=True)
    assert "dd of=" in d.note.read_text() and d.sha256 in d.note.read_text()
