"""Interrupted runs (issue 14, item 6): ``aios run --resume`` continues a run from its first unfinished
phase into the same folder, and every long step survives a kill: a rerun finds the half-done state
and cleans or finishes it, and no half-written cache entry is used.

Fast tests: the state detection as pure functions on captured state (run.json, cache listings,
parameter dumps, journal lines), and the clean-up steps on small real objects (loop devices, a
cache entry, a journal). Slow tests kill a long step at a random point (quick sizes) and run it
again: writing a SYNTHETIC model, quantising it, building llama.cpp (ccache), bootstrapping an
image, and a whole ``aios run``. A kill is either "power loss" (the process tree stopped, then
SIGKILLed at once: nothing can clean up) or SIGKILL of the Python process alone (the runner's
watchdog must stop what it started). The random delay's seed is printed, so a failure repeats
with ``AIOS_KILL_SEED``.
"""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from aios_lib import resume
from aios_lib.core import cache
from aios_lib.core.journal import Journal, read_journal
from aios_lib.core.records import read_json, write_json

ROOT = Path(__file__).resolve().parent.parent


# ---- pure: where a run stopped -------------------------------------------------------------------------
def _phase(p, status):
    return {"phase": p, "notebook": f"{p}_x.ipynb", "status": status, "seconds": 1.0}


def test_resume_point_is_the_first_unfinished_phase():
    req = ["01", "04", "05", "07"]
    # killed during 05: run.json says "running" (written before the phase started)
    assert resume.resume_point(req, [_phase("01", "ok"), _phase("04", "ok"), _phase("05", "running")]) == \
        (["01", "04"], ["05", "07"])
    # 04 failed: the run stopped there
    assert resume.resume_point(req, [_phase("01", "ok"), _phase("04", "failed")]) == (["01"], ["04", "05", "07"])
    # killed before the first phase started
    assert resume.resume_point(req, []) == ([], req)
    # a notebook missing at the time counts as unfinished
    assert resume.resume_point(["01", "03"], [_phase("01", "ok"), _phase("03", "missing")]) == (["01"], ["03"])
    # nothing left
    assert resume.resume_point(req, [_phase(p, "ok") for p in req]) == (req, [])


def test_requested_phases_of_old_and_new_records():
    assert resume.requested_phases({"requested": ["02", "03"], "params": {"phases": ["01"]}}) == ["02", "03"]
    # a record made before "requested": the phases it recorded, then the rest of its parameters' list
    old = {"phases": [_phase("01", "ok"), _phase("04", "failed")], "params": {"phases": ["01", "04", "05", "07"]}}
    assert resume.requested_phases(old) == ["01", "04", "05", "07"]
    assert resume.requested_phases({"phases": [], "params": {"phases": ["01", "04"]}}) == ["01", "04"]


def test_how_a_run_ended():
    killed = {"phases": [_phase("01", "ok"), _phase("04", "running")]}
    assert resume.interrupted(killed) and resume.how_it_ended(killed) == "interrupted during phase 04"
    failed = {"finished": "t", "phases": [_phase("01", "ok"), _phase("04", "failed")]}
    assert not resume.interrupted(failed) and resume.how_it_ended(failed) == "phase 04 failed"
    assert resume.how_it_ended({"finished": "t", "phases": [_phase("01", "ok")]}) == "finished: every phase ok"
    assert resume.how_it_ended({"phases": []}) == "interrupted (no end recorded)"


def test_parameter_differences_name_the_keys():
    rec = {"machine": {"name": "box"}, "runtime": {"bench": {"threads": [1, 2]}, "jobs": 2}, "phases": ["01"]}
    now = {"machine": {"name": "box"}, "runtime": {"bench": {"threads": [1, 4]}, "jobs": 2}, "phases": ["01"],
           "service": {"port": 8080}}
    assert resume.param_differences(rec, now) == ["runtime.bench.threads", "service"]
    assert resume.param_differences(rec, json.loads(json.dumps(rec))) == []
    assert resume.param_differences({"source_file": "a"}, {"source_file": "b"}) == []


def _record(tmp_path, **meta):
    d = tmp_path / "box" / "20260101-000000-run"
    d.mkdir(parents=True)
    write_json(d / "run.json", {"run_id": d.name, "plan": False, "params_file": "p.yaml", "params": {"a": 1},
                                "requested": ["01", "04"], "phases": [_phase("01", "ok"), _phase("04", "running")],
                                **meta})
    return d


def test_plan_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(resume.ResumeRefused, match="no run.json"):
        resume.plan_resume(tmp_path)
    d = _record(tmp_path)
    rp = resume.plan_resume(d, {"a": 1})
    assert (rp.done, rp.todo, rp.attempt, rp.how_it_ended) == (["01"], ["04"], 1, "interrupted during phase 04")
    assert "phases to run again: 04 (from 04, the first unfinished)" in "\n".join(rp.lines())
    with pytest.raises(resume.ResumeRefused, match=r"p.yaml: changed since run .* \(a\); a resume must use"):
        resume.plan_resume(d, {"a": 2})
    plan_run = tmp_path / "plan"
    plan_run.mkdir()
    write_json(plan_run / "run.json", {"plan": True, "phases": []})
    with pytest.raises(resume.ResumeRefused, match="plan-mode record"):
        resume.plan_resume(plan_run)
    meta = read_json(d / "run.json")
    write_json(d / "run.json", {**meta, "finished": "t", "phases": [_phase("01", "ok"), _phase("04", "ok")]})
    with pytest.raises(resume.ResumeRefused, match=r"finished, every phase ok \(01, 04\): nothing to resume"):
        resume.plan_resume(d, {"a": 1})
    # a failed phase is resumable; parameters named in run.json but gone are refused in one line
    write_json(d / "run.json", {**meta, "finished": "t", "phases": [_phase("01", "ok"), _phase("04", "failed")]})
    assert resume.plan_resume(d, {"a": 1}).todo == ["04"]
    with pytest.raises(resume.ResumeRefused, match=r"parameter file the run started with cannot be read \(.*p.yaml: "
                                                   r"no such parameter file"):
        resume.recorded_params(d, read_json(d / "run.json"))


# ---- pure: what a kill left in the cache ---------------------------------------------------------------
def test_classify_cache_items():
    c = cache.classify
    assert c("llama", "native-abc", True, False) == "incomplete entry"
    assert c("llama", "native-abc", True, True) is None
    assert c("llama", "native-abc.lock", False, False) is None
    assert c("kernel-build", "6.12-abc", True, False) == "incomplete entry"
    assert c("llama-build", "native-abc", True, False, builds_complete=False) == "build tree"
    assert c("llama-build", "native-abc", True, False, builds_complete=True) is None
    assert c("llama-build", "native-abc", True, False, builds_complete=None) is None
    assert c("models", "m.Q4_K_M.abc.gguf.part", False, False) == "partial file"
    assert c("models", "m.Q4_K_M.abc.gguf", False, False) is None
    assert c("ccache", "x.tmp", False, False) is None  # the tool checks its own
    assert c("synapse-os", "key", True, False) == "incomplete entry"
    assert c("stream", "key", True, False) is None  # not a marked kind: its files are renamed into place


def test_leftovers_found_in_a_cache_tree(tmp_path):
    root = tmp_path / "cache"
    (root / "llama" / "native-done" / "bin").mkdir(parents=True)
    (root / "llama" / "native-done" / cache.MARKER).write_text("{}")
    (root / "llama" / "native-half" / "bin").mkdir(parents=True)  # killed while copying bin/
    (root / "llama-build" / "native-half" / "build").mkdir(parents=True)
    (root / "llama-build" / "native-done" / "build").mkdir(parents=True)
    (root / "kernel-build" / "6.12-k").mkdir(parents=True)
    (root / "models" / "quantized").mkdir(parents=True)
    (root / "models" / "quantized" / "m.Q4_K_M.k.gguf.part").write_bytes(b"GGUF\0")
    (root / "models" / "quantized" / "m.Q4_0.k.gguf").write_bytes(b"GGUF whole")
    (root / "base-image" / "key" ).mkdir(parents=True)
    (root / "base-image" / "key" / ".disk.img.tmp").write_bytes(b"\0")
    found = {str(lo.path.relative_to(root)): lo for lo in cache.leftovers(root)}
    assert set(found) == {"llama/native-half", "llama-build/native-half", "kernel-build/6.12-k",
                          "models/quantized/m.Q4_K_M.k.gguf.part", "base-image/key"}
    assert found["llama/native-half"].action.startswith("removed and rebuilt")
    assert "ninja continues" in found["llama-build/native-half"].action
    assert "make continues" in found["kernel-build/6.12-k"].action
    assert found["models/quantized/m.Q4_K_M.k.gguf.part"].what == "partial file"
    assert not any(lo.locked for lo in found.values())
    # a build in progress holds its lock: reported as such, not as a leftover to clean
    with cache.lock(root / "llama" / "native-half.lock"):
        held = {str(lo.path.relative_to(root)): lo.locked for lo in cache.leftovers(root)}
    assert held["llama/native-half"] and held["llama-build/native-half"] and not held["kernel-build/6.12-k"]


# ---- journal ------------------------------------------------------------------------------------------
def test_a_journal_line_cut_by_a_kill_is_ended_and_skipped(tmp_path, runner):
    path = tmp_path / "commands.jsonl"
    runner.probe(["true"])
    with path.open("a") as f:
        f.write('{"argv": ["cmake", "--bu')  # the kill came in the middle of a write
    assert [e["argv"] for e in read_journal(path)] == [["true"]]
    j = Journal(path)
    assert j.repair() is True and j.repair() is False
    runner.note("resumed")
    entries = read_journal(path)
    assert [e["argv"] for e in entries] == [["true"], ["#", "resumed"]]
    assert entries[-1]["kind"] == "probe" and entries[-1]["rc"] == 0 and entries[-1]["note"] == "observation"


# ---- the build cache: nothing half-written is used ---------------------------------------------------
@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_publish_discards_a_copy_a_killed_run_left(runner, tmp_path, cache_root):
    entry = cache.Entry("base-image", "k1")
    entry.path.mkdir(parents=True)
    (entry.path / ".disk.img.tmp").write_bytes(b"half")  # killed in the middle of the copy
    assert not entry.complete() and not (entry.path / "disk.img").exists()
    src = tmp_path / "disk.img"
    src.write_bytes(b"whole image")
    dst = cache.publish(runner, src, entry, {"key": "k1"})
    assert dst.read_bytes() == b"whole image" and entry.complete()
    assert not (entry.path / ".disk.img.tmp").exists()
    rm = [e for e in read_journal(tmp_path / "commands.jsonl") if e["argv"][:2] == ["rm", "-rf"]]
    assert rm and "without its completion marker" in rm[0]["note"]


def test_a_partial_synthetic_model_is_removed_and_written_again(make_run, cache_root, tmp_path):
    from aios_lib.runtime import model

    tiny = dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_vocab=512, dtype="Q8_0")
    run = make_run()
    first = model.synthetic_model(run, **tiny)
    whole = first.path.read_bytes()
    # as a kill leaves it: a truncated .part beside no finished file
    first.path.unlink()
    first.path.with_name(first.path.name + ".sha256").unlink()
    part = first.path.with_name(first.path.name + ".part")
    part.write_bytes(whole[: len(whole) // 3])
    again = model.synthetic_model(run, **tiny)
    assert again.path.read_bytes() == whole and not part.exists() and again.source["cached"] is False
    notes = [e["note"] for e in read_journal(run.dir / "commands.jsonl") if e["argv"][:2] == ["rm", "-f"]]
    assert any("a partial SYNTHETIC model" in (n or "") for n in notes)


FAKE_QUANTIZE = """#!{python}
import shutil, sys
# llama-quantize --allow-requantize IN OUT TYPE THREADS, as a copy: the bookkeeping around it is tested
shutil.copyfile(sys.argv[2], sys.argv[3])
print("[   1/   1] copied")
"""


def test_a_partial_or_damaged_quantised_file_is_never_used(make_run, cache_root, tmp_path):
    """``.part`` is what a killed llama-quantize leaves: removed (journaled) and quantised again; a
    file at the final name that is not a sound GGUF is quantised again too, never served."""
    from types import SimpleNamespace

    from aios_lib.runtime import model

    run = make_run()
    src = model.synthetic_model(run, n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=256, n_vocab=512,
                                dtype="Q8_0")
    bins = tmp_path / "bin"
    bins.mkdir()
    (bins / "llama-quantize").write_text(FAKE_QUANTIZE.format(python=sys.executable))
    (bins / "llama-quantize").chmod(0o755)
    build = SimpleNamespace(binary=lambda n: bins / n, planned=False)
    out_dir = tmp_path / "quantized"
    out_dir.mkdir()
    whole = src.path.read_bytes()
    out = model.quantize(run, build, src, "Q4_K_M", out_dir=out_dir).path
    assert out.parent == out_dir and out.read_bytes() == whole
    out.unlink()
    part = out.with_name(out.name + ".part")
    part.write_bytes(whole[: len(whole) // 2])  # as a kill halfway through leaves it
    q = model.quantize(run, build, src, "Q4_K_M", out_dir=out_dir)
    assert q.path == out and out.read_bytes() == whole and not part.exists() and q.source["cached"] is False
    entries = read_journal(run.dir / "commands.jsonl")
    rm = [e for e in entries if e["argv"] == ["rm", "-f", str(part)]]
    assert len(rm) == 1 and rm[0]["note"].startswith("a partial Q4_K_M quantisation (")
    assert entries.index(rm[0]) < max(i for i, e in enumerate(entries) if e["argv"][0] == str(bins / "llama-quantize"))
    # a finished file is taken from the cache; a damaged one (truncated) is not
    assert model.quantize(run, build, src, "Q4_K_M", out_dir=out_dir).source["cached"] is True
    out.write_bytes(whole[: len(whole) - 4096])
    again = model.quantize(run, build, src, "Q4_K_M", out_dir=out_dir)
    assert again.source["cached"] is False and out.read_bytes() == whole
    notes = [e["note"] for e in read_journal(run.dir / "commands.jsonl") if e["argv"] == ["rm", "-f", str(out)]]
    assert len(notes) == 1 and notes[0].startswith("not a sound GGUF, quantised again: ")


def test_an_entry_without_its_marker_is_removed_through_the_runner(runner, cache_root, tmp_path):
    entry = cache.Entry("llama", "native-k")
    (entry.path / "bin").mkdir(parents=True)
    (entry.path / "bin" / "llama-bench").write_bytes(b"half a binary")
    assert [lo.what for lo in cache.leftovers(cache_root)] == ["incomplete entry"]
    assert entry.discard_incomplete(runner) is True and not entry.path.exists()
    assert entry.discard_incomplete(runner) is False  # nothing left: nothing done
    e = read_journal(tmp_path / "commands.jsonl")
    assert [x["argv"] for x in e] == [["rm", "-rf", str(entry.path)]] and "without its completion marker" in e[0]["note"]
    # a complete entry is kept as it is
    entry.path.mkdir(parents=True)
    entry.mark_complete({"k": 1})
    assert entry.discard_incomplete(runner) is False and entry.complete() and cache.leftovers(cache_root) == []


# ---- the target: leftovers released, a killed image never "up to date" -------------------------------
def _small_image(tmp_path):
    from aios_lib.params import parse_params

    img = tmp_path / "t.img"
    data = {"schema_version": 1, "target": {"kind": "image", "image": str(img), "image_size": "512M", "confirm": str(img)},
            "system": {"esp_size_mib": 100, "use_image_cache": False}}
    return parse_params(data, "<test>"), img


def _targets_under(d):
    from aios_lib.facts.blockdev import parse_findmnt_targets

    return parse_findmnt_targets(subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                                                text=True).stdout, str(d))


def _loops(img):
    from aios_lib.facts.blockdev import parse_losetup_j

    return parse_losetup_j(subprocess.run(["losetup", "-j", str(img)], capture_output=True, text=True).stdout)


def test_recover_releases_what_a_killed_phase_left_mounted_and_says_so(tmp_path, monkeypatch):
    from aios_lib.context import open_run
    from aios_lib.system import image, target

    monkeypatch.setenv("AIOS_MOUNT_BASE", str(tmp_path / "mnt"))
    params, img = _small_image(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    for step in (image.validate, image.prepare, image.partition, image.format, image.mount):
        step(run, b)
    # half-bootstrapped: what debootstrap has unpacked when the power goes
    (b.spec.root / "debootstrap").mkdir()
    (b.spec.root / "debootstrap" / "debootstrap.log").write_text("I: Retrieving InRelease\n")
    (b.spec.root / "usr" / "bin").mkdir(parents=True)
    b.att.stack.items.clear()  # killed: nothing will undo the mounts
    assert _targets_under(b.spec.mount_dir) and _loops(img)
    run2 = open_run(params, run_dir=tmp_path / "run", phase="run")
    found = resume.recover(run2, ledger=tmp_path / "no-ledger.json", scan_cache=False)
    assert len(found) == 1 and "left by an interrupted run" in found[0] and "detached /dev/loop" in found[0]
    assert _targets_under(b.spec.mount_dir) == [] and _loops(img) == []
    # the half-bootstrapped image is not taken for done: phase 02 builds it again from scratch
    again = image.start(open_run(params, run_dir=tmp_path / "run", phase="02"))
    assert image.validate(run2, again).state == "left incomplete by an interrupted build: rebuilt from scratch"
    entries = read_journal(tmp_path / "run" / "commands.jsonl")
    assert any(e["argv"][0] == "umount" and e["note"] == "left mounted by an interrupted run" for e in entries)
    assert entries[-1]["argv"] == ["#", found[0]]
    # a later phase holding the target releases leftovers itself too (no mount stacked on a mount)
    with target.mounted(run2.runner, b.spec, esp=False) as m:
        m.stack.items.clear()  # killed inside
    with target.mounted(run2.runner, b.spec, esp=False):
        assert _targets_under(b.spec.mount_dir) == [str(b.spec.mount_dir)] and len(_loops(img)) == 1
    assert _targets_under(b.spec.mount_dir) == [] and _loops(img) == []


def test_a_kill_while_partitioning_leaves_no_image_that_looks_up_to_date(tmp_path, monkeypatch):
    """The manifest says "incomplete" before the first byte of the image changes."""
    from aios_lib.context import open_run
    from aios_lib.system import image, target

    params, img = _small_image(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="02")
    b = image.start(run)
    key = image.validate(run, b).key
    img.write_bytes(b"a finished image")
    target.write_manifest(run.runner, b.spec, key=key, complete=True)
    assert "up to date" in image.validate(run, b).state
    real = run.runner.destructive

    def killed(argv, **kw):
        if argv[0] == "truncate":
            raise KeyboardInterrupt  # the kill, at the first write of the image
        return real(argv, **kw)

    monkeypatch.setattr(run.runner, "destructive", killed)
    with pytest.raises(KeyboardInterrupt):
        image.partition(run, b)
    assert target.read_manifest(b.spec) == {**target.read_manifest(b.spec), "key": key, "complete": False}
    assert image.validate(run, b).state == "left incomplete by an interrupted build: rebuilt from scratch"


def test_restoring_a_cached_image_removes_its_manifests_first(tmp_path, monkeypatch):
    from aios_lib.context import open_run
    from aios_lib.system import target

    params, img = _small_image(tmp_path)
    run = open_run(params, run_dir=tmp_path / "run", phase="06")
    spec = target.open_target(run)
    img.write_bytes(b"old")
    target.write_manifest(run.runner, spec, key="old", complete=True)
    target.Manifest(img, ".synapse-os.json").write(run.runner, {"key": "os", "complete": True})
    cached = tmp_path / "cached.img"
    cached.write_bytes(b"new")
    monkeypatch.setattr(run.runner, "destructive", lambda argv, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed during the copy
        target.restore_image(run.runner, spec, cached, note="t")
    assert target.read_manifest(spec) == {} and target.Manifest(img, ".synapse-os.json").read() == {}


# ---- live host settings ----------------------------------------------------------------------------------
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.usefixtures("thp_writable")
def test_recover_restores_live_settings_a_killed_measurement_left(make_run, tmp_path):
    from aios_lib.settings import live

    found = live.bracketed(THP.read_text())
    other = "always" if found != "always" else "never"
    ledger = tmp_path / "live-restore.json"
    # what a measurement killed by SIGKILL leaves: its change in effect, its ledger (a dead pid)
    ledger.write_text(json.dumps({"pid": 2 ** 22 + 1, "original": {"thp": found}, "time": 0}))
    subprocess.run(["tee", str(THP)], input=other + "\n", text=True, check=True, capture_output=True)
    try:
        run = make_run(phase="run")
        lines = resume.recover(run, ledger=ledger, scan_cache=False)
        assert live.bracketed(THP.read_text()) == found and not ledger.exists()
        assert lines == [f"live host settings a killed measurement left ({ledger}) restored: thp {other} -> {found}"]
        entries = read_journal(run.dir / "commands.jsonl")
        assert any(e["argv"] == ["tee", str(THP)] for e in entries) and entries[-1]["argv"] == ["#", lines[0]]
    finally:
        subprocess.run(["tee", str(THP)], input=found + "\n", text=True, capture_output=True)


MEASURE = """
import sys
from pathlib import Path
from aios_lib.context import open_run
from aios_lib.params import parse_params
from aios_lib.settings import live
run = open_run(parse_params({{"schema_version": 1}}, "<t>"), run_dir=sys.argv[1], plan=False, phase="05")
with live.LiveState(run, settings={{"thp": live.KNOWN["thp"]}}, ledger=Path(sys.argv[2])) as state:
    state.ensure({{"thp": sys.argv[3]}})
    print("measuring", flush=True)
    run.runner.work(["sleep", "{secs}"], note="the measurement")
"""


@pytest.mark.usefixtures("thp_writable")
def test_a_measurement_killed_with_its_settings_changed_is_put_back_by_the_next_run(make_run, tmp_path):
    """The benchmark's way of changing the host (LiveState), SIGKILLed at a random point of its
    measurement: nothing restores the setting then; the next run's recover() does, from the ledger."""
    from aios_lib.settings import live

    found = live.bracketed(THP.read_text())
    other = "always" if found != "always" else "never"
    ledger = tmp_path / "live-restore.json"
    secs = str(300 + os.getpid() % 83)
    p = subprocess.Popen([sys.executable, "-c", MEASURE.format(secs=secs), str(tmp_path / "killed"), str(ledger), other],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _read_until(p, "measuring")
        assert live.bracketed(THP.read_text()) == other and ledger.exists()
        time.sleep(_rng().uniform(0, 1))
        p.kill()
        p.wait()
        assert _wait_gone(secs, 15), "the watchdog stopped the measurement's command"
        assert live.bracketed(THP.read_text()) == other, "a SIGKILLed measurement restores nothing itself"
        lines = resume.recover(make_run(phase="run"), ledger=ledger, scan_cache=False)
        assert lines == [f"live host settings a killed measurement left ({ledger}) restored: thp {other} -> {found}"]
        assert live.bracketed(THP.read_text()) == found and not ledger.exists()
    finally:
        p.kill()
        subprocess.run(["tee", str(THP)], input=found + "\n", text=True, capture_output=True)


# ---- the watchdog: nothing keeps running after its Python is killed -------------------------------------
WATCHED = """
import sys
from aios_lib.core import cache
from aios_lib.core.journal import Journal
from aios_lib.core.runner import Runner
r = Runner(journal=Journal(None))
with cache.lock(sys.argv[1]):
    print("locked", flush=True)
    r.work(["sleep", "{secs}"])
"""


def _procs_with(arg: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if arg in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def _wait_gone(arg: str, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if not _procs_with(arg):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_of_python_stops_its_commands_and_the_lock_waits_for_them(tmp_path):
    secs = str(200 + os.getpid() % 97)  # a sleep of our own, found by its argument
    lock = tmp_path / "entry.lock"
    p = subprocess.Popen([sys.executable, "-c", WATCHED.format(secs=secs), str(lock)], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    assert p.stdout.readline().strip() == "locked"
    end = time.time() + 10
    while not _procs_with(secs) and time.time() < end:
        time.sleep(0.05)
    assert _procs_with(secs), "the command started"
    p.kill()
    p.wait()
    # the command inherited the lock: until it has stopped, the entry is still locked
    assert cache._locked_now(lock) or not _procs_with(secs)
    assert _wait_gone(secs, 15), "the watchdog stopped the command of the killed process"
    end = time.time() + 5
    while cache._locked_now(lock) and time.time() < end:
        time.sleep(0.05)
    assert not cache._locked_now(lock)


# ---- aios run --resume -----------------------------------------------------------------------------------
def _aios(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "aios_lib.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


def _fake_project(tmp_path, second_cell: str):
    """A project whose phase 01 records a value and whose phase 04 runs ``second_cell``."""
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "parameters").mkdir()
    (root / "parameters" / "p.yaml").write_text("schema_version: 1\nmachine:\n  name: box\n")

    def notebook(phase, cells):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "synapse", "display_name": "Synapse", "language": "python"}
        p = nbformat.v4.new_code_cell('params_file = ""\nrun_dir = None\nplan = True')
        p.metadata["tags"] = ["parameters"]
        opener = f"import aios_lib\nrun = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase={phase!r})"
        nb.cells = [p, nbformat.v4.new_code_cell(opener)] + [nbformat.v4.new_code_cell(c) for c in cells]
        nbformat.write(nb, root / "notebooks" / f"{phase}_{'research_prep' if phase == '01' else 'ai_runtime'}.ipynb")

    notebook("01", ["run.record('value', 41)"])
    notebook("04", [second_cell, "run.record('value', run.recorded('01', 'value') + 1)"])
    return root


def _env(tmp_path, root):
    return {"AIOS_ROOT": str(root), "AIOS_OUTPUTS": str(tmp_path / "out"), "AIOS_CACHE": str(tmp_path / "cache"),
            "AIOS_MOUNT_BASE": str(tmp_path / "mnt")}


def test_a_failed_run_resumes_from_its_failed_phase_into_the_same_folder(tmp_path):
    flag = tmp_path / "broken"
    flag.write_text("")
    root = _fake_project(tmp_path, f"import pathlib\nassert not pathlib.Path({str(flag)!r}).exists(), 'phase broke'")
    env = _env(tmp_path, root)
    r = _aios("run", "01", "04", "--params", str(root / "parameters/p.yaml"), "--quiet", env=env)
    assert r.returncode == 1 and "04 04_ai_runtime.ipynb: failed" in r.stdout
    d = next((tmp_path / "out" / "box").iterdir())
    meta = read_json(d / "run.json")
    assert meta["requested"] == ["01", "04"] and [p["status"] for p in meta["phases"]] == ["ok", "failed"]
    first_01 = meta["phases"][0]
    # a resume refuses phases, other parameters, and says what it would do
    bad = _aios("run", "--resume", str(d), "04", env=env)
    assert bad.returncode == 2 and "name no phase" in bad.stderr
    shown = _aios("plan", "--resume", str(d), env=env)
    assert shown.returncode == 0 and "phase 04 failed" in shown.stdout and "phases finished and kept: 01" in shown.stdout
    assert read_json(d / "run.json") == meta  # a preview changes nothing

    flag.unlink()  # the cause is fixed
    r = _aios("run", "--resume", str(d), "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from phase 04" in r.stdout and f"record: {d}" in r.stdout
    meta = read_json(d / "run.json")
    assert [(p["phase"], p["status"]) for p in meta["phases"]] == [("01", "ok"), ("04", "ok")]
    assert meta["phases"][0] == first_01 and meta["ok"] is True and "finished" in meta
    assert meta["resumes"][0]["from"] == "04" and meta["resumes"][0]["kept"] == ["01"]
    assert meta["resumes"][0]["how_it_ended"] == "phase 04 failed"
    results = read_json(d / "results.json")
    assert results["01"]["value"] == 41 and results["04"]["value"] == 42  # phase 01's result kept and used
    # the failed attempt is kept beside the record, not in it
    assert (d / "attempts" / "1" / "04_ai_runtime.ipynb").exists() and (d / "04_ai_runtime.html").exists()
    assert "phase broke" in (d / "attempts" / "1" / "04_ai_runtime.ipynb").read_text()
    notes = [e for e in read_journal(d / "commands.jsonl") if e["argv"][0] == "#"]
    assert any(n["phase"] == "resume" and "aios run --resume (attempt 1): phase 04 failed" in n["argv"][1]
               for n in notes)
    again = _aios("run", "--resume", str(d), env=env)
    assert again.returncode == 2 and "finished, every phase ok (01, 04): nothing to resume" in again.stderr


def test_a_run_killed_in_a_phase_resumes_there_and_keeps_the_attempt(tmp_path):
    """run.json as a kill during phase 04 leaves it (04 ``running``, no end), with a partial
    notebook and a partial result of 04: the resume sets them aside and runs 04 again."""
    # while a phase runs, run.json says so (a kill leaves it that way)
    root = _fake_project(tmp_path, "from aios_lib.core.records import read_json\n"
                                   "run.record('seen', read_json(run.dir / 'run.json')['phases'][-1])")
    env = _env(tmp_path, root)
    r = _aios("run", "01", "--params", str(root / "parameters/p.yaml"), "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    d = next((tmp_path / "out" / "box").iterdir())
    meta = read_json(d / "run.json")
    for k in ("finished", "ok"):
        meta.pop(k)
    meta["requested"] = ["01", "04"]
    meta["phases"].append({"phase": "04", "notebook": "04_ai_runtime.ipynb", "status": "running", "seconds": 0.0})
    write_json(d / "run.json", meta)
    (d / "04_ai_runtime.ipynb").write_text('{"cells": [')  # papermill's copy, cut by the kill
    write_json(d / "results.json", {**read_json(d / "results.json"), "04": {"value": -1}})
    shown = _aios("plan", "--resume", str(d), env=env)
    assert shown.returncode == 0 and "interrupted during phase 04" in shown.stdout
    from aios_lib.index import row

    assert row({**meta, "_dir": d}, tmp_path / "out")["outcome"] == "interrupted"  # nobody works in it
    r = _aios("run", "--resume", str(d), "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = read_json(d / "run.json")
    assert [(p["phase"], p["status"]) for p in meta["phases"]] == [("01", "ok"), ("04", "ok")] and meta["ok"]
    assert meta["resumes"][0]["how_it_ended"] == "interrupted during phase 04"
    assert read_json(d / "results.json")["04"]["value"] == 42
    seen = read_json(d / "results.json")["04"]["seen"]
    assert (seen["phase"], seen["status"]) == ("04", "running") and seen["started"]
    assert read_json(d / "attempts" / "1" / "results.json") == {"04": {"value": -1}}
    assert (d / "attempts" / "1" / "04_ai_runtime.ipynb").read_text() == '{"cells": ['


HOLD = """
import sys, time
from aios_lib.core.records import hold_run_folder
hold_run_folder(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def test_a_folder_a_process_still_works_in_is_not_claimed(tmp_path):
    from aios_lib.core.records import claim_run_folder, folder_in_use

    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "holding"
        assert claim_run_folder(tmp_path, wait_s=0.3) is None
        assert folder_in_use(tmp_path)
    finally:
        p.kill()
        p.wait()
    claimed = claim_run_folder(tmp_path, wait_s=5)
    assert claimed is not None and folder_in_use(tmp_path)  # the claim holds it
    claimed.close()
    assert not folder_in_use(tmp_path)


def test_resume_help_names_the_option():
    r = _aios("run", "--help")
    text = " ".join(r.stdout.split())  # argparse wraps the help to the terminal's width
    assert r.returncode == 0 and "--resume RUN_DIR" in text and "from its first unfinished phase" in text


# ---- slow: kill long steps at a random point, then rerun ---------------------------------------------
def _rng() -> random.Random:
    seed = int(os.environ.get("AIOS_KILL_SEED") or time.time_ns() % 10**6)
    print(f"kill seed {seed} (AIOS_KILL_SEED={seed} repeats it)")
    return random.Random(seed)


def power_loss(pid: int) -> list[int]:
    """Stop the process tree of ``pid`` (so nothing in it reacts), then SIGKILL all of it at once:
    what a power loss does to the processes; no finally, no atexit, no watchdog."""
    stopped: dict[int, psutil.Process] = {}
    while True:
        try:
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = [q for q in stopped.values()]
        new = [q for q in tree if q.pid not in stopped]
        if not new:
            break
        for q in new:
            try:
                q.suspend()
            except psutil.NoSuchProcess:
                pass
            stopped[q.pid] = q
    for q in stopped.values():
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    return sorted(stopped)


SYNTH = """
import sys
from pathlib import Path
from aios_lib.context import open_run
from aios_lib.params import parse_params
from aios_lib.runtime import model
run = open_run(parse_params({"schema_version": 1}, "<t>"), run_dir=sys.argv[1], plan=False, phase="04")
spec = dict(n_embd=1024, n_layer=8, n_head=8, n_head_kv=4, n_ff=2816 - 2816 % 256, n_vocab=32000, dtype="f16")
m = model.synthetic_model(run, **spec)
if len(sys.argv) > 2:
    from types import SimpleNamespace
    b = SimpleNamespace(binary=lambda n: Path(sys.argv[2]) / n, planned=False)
    print("quantising", flush=True)
    q = model.quantize(run, b, m, "Q4_K_M", threads=2)
    print("quantised", q.path, flush=True)
print("wrote", m.path, flush=True)
"""


def _step(tmp_path, name, *args):
    env = {**os.environ, "AIOS_CACHE": str(tmp_path / "cache")}
    return subprocess.Popen([sys.executable, "-c", SYNTH, str(tmp_path / name), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_while_writing_a_synthetic_model_the_rerun_writes_it_whole(tmp_path):
    """The model is written as ``.part`` and renamed when whole: a kill leaves no model file, the
    rerun removes the partial one and writes the same bytes an uninterrupted run writes."""
    t0 = time.time()
    ref = _step(tmp_path, "ref")
    out = ref.communicate()[0]
    took = time.time() - t0
    assert ref.returncode == 0, out
    path = Path(out.split("wrote ")[-1].strip())
    whole = cache.file_sha256(path)
    for f in path.parent.iterdir():
        if f.name.startswith(path.name):
            f.unlink()
    p = _step(tmp_path, "killed")
    time.sleep(_rng().uniform(0.3 * took, 0.8 * took))  # python starts, numpy draws, then the file grows
    power_loss(p.pid)
    p.wait()
    part = path.with_name(path.name + ".part")
    # nothing unfinished carries the model's name (the kill may come after the rename: then it is whole)
    assert not path.exists() or cache.file_sha256(path) == whole
    again = _step(tmp_path, "rerun")
    out = again.communicate()[0]
    assert again.returncode == 0, out
    assert cache.file_sha256(path) == whole and not part.exists()
    rm = [e for e in read_journal(tmp_path / "rerun" / "commands.jsonl") if e["argv"][:2] == ["rm", "-f"]]
    assert not rm or "a partial SYNTHETIC model" in rm[0]["note"]  # the kill may come before the file was opened


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_while_quantising_the_rerun_quantises_again(tmp_path, llama_native):
    """llama-quantize writes ``.part``; a kill at a random point leaves it, never the quantised file;
    the rerun removes it (journaled) and gets the bytes an uninterrupted quantisation gets."""
    bins = llama_native.bin_dir
    ref = _step(tmp_path, "ref", bins)
    out = ref.communicate()[0]
    assert ref.returncode == 0, out
    qpath = Path(out.split("quantised ")[-1].split("\n")[0].strip())
    whole = cache.file_sha256(qpath)
    qpath.unlink()
    timing = _step(tmp_path, "timing", bins)
    _read_until(timing, "quantising")
    t0 = time.time()
    timing.communicate()
    took = time.time() - t0  # the quantisation alone, as the killed run's clock starts
    qpath.unlink()
    p = _step(tmp_path, "killed", bins)
    _read_until(p, "quantising")
    time.sleep(_rng().uniform(0.05, 0.8) * took)
    power_loss(p.pid)
    p.wait()
    part = qpath.with_name(qpath.name + ".part")
    # nothing unfinished carries the quantised file's name (after the rename it is whole)
    assert not qpath.exists() or cache.file_sha256(qpath) == whole
    had_part = part.exists()
    again = _step(tmp_path, "rerun", bins)
    out = again.communicate()[0]
    assert again.returncode == 0, out
    assert cache.file_sha256(qpath) == whole and not part.exists()
    rm = [e for e in read_journal(tmp_path / "rerun" / "commands.jsonl") if e["argv"][:2] == ["rm", "-f"]]
    assert bool(rm) == had_part and all("a partial Q4_K_M quantisation" in e["note"] for e in rm)


def _read_until(p, word: str) -> None:
    for line in p.stdout:
        if word in line:
            return
    raise AssertionError(f"the step ended before printing {word!r}")


BUILD = """
import sys
from aios_lib.context import open_run
from aios_lib.params import parse_params
from aios_lib.runtime import llama
run = open_run(parse_params({"schema_version": 1}, "<t>"), run_dir=sys.argv[1], plan=False, phase="04")
b = llama.build(run, label="resume-test", targets=["llama-quantize"])
print("built", b.bin_dir, b.cached, flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_llama_build_is_finished_by_the_rerun_and_never_used_half_done(tmp_path, llama_native, monkeypatch):
    """The Python process building llama.cpp is SIGKILLed at a random point of the compile (ccache
    warm from the session's native build): the watchdog stops cmake/ninja and the compilers, the
    entry has no marker, and the rerun continues the build tree, marks it complete, and the
    result's kernel test (llama.cpp's test-quantize-fns) ends as the uninterrupted build's does."""
    real = Path(os.environ.get("AIOS_CACHE") or Path.home() / ".cache" / "synapse")
    tmp_cache = tmp_path / "cache"
    tmp_cache.mkdir()
    for shared in ("llama-src", "downloads", "ccache"):  # the source and compiler cache, not the builds
        (real / shared).mkdir(parents=True, exist_ok=True)
        (tmp_cache / shared).symlink_to(real / shared)
    monkeypatch.setenv("AIOS_CACHE", str(tmp_cache))  # cache.Entry here looks where the builds go
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path / "killed")], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    build_roots = tmp_cache / "llama-build"
    objects = _rng().randint(1, 60)
    end = time.time() + 600
    while time.time() < end and p.poll() is None:
        if _count(build_roots, ".o") >= objects:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the build ended before the kill"
    p.kill()  # SIGKILL of the Python process alone: no finally runs in it
    p.wait()
    bdir = next(build_roots.glob("*/build"))
    assert _wait_gone_in(str(bdir), 20), "the watchdog stopped the compile the killed process started"
    entry = cache.Entry("llama", bdir.parent.name)
    assert not entry.complete()
    lo = {str(x.path): x for x in cache.leftovers(tmp_cache)}
    assert lo[str(bdir.parent)].what == "build tree" and not lo[str(bdir.parent)].locked
    again = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "rerun")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.strip().endswith("False")  # built, not taken from a cache
    assert entry.complete() and (entry.path / "bin" / "llama-quantize").exists()
    notes = [e["argv"][1] for e in read_journal(tmp_path / "rerun" / "commands.jsonl") if e["argv"][0] == "#"]
    assert any("an interrupted build left" in n and "ninja continues it" in n for n in notes)
    # the continued build behaves as the uninterrupted native build of the session (which may crash
    # on a VM that hides AMX: then both do)
    test = subprocess.run([str(entry.path / "bin" / "test-quantize-fns")], capture_output=True, text=True, timeout=600)
    ref = subprocess.run([str(llama_native.bin_dir / "test-quantize-fns")], capture_output=True, text=True,
                         timeout=600)
    assert test.returncode == ref.returncode, test.stdout[-2000:] + test.stderr[-2000:]


KBUILD = """
import sys
from aios_lib.context import open_run
from aios_lib.kernel import build as kernel_build, config as kernel_config, source as kernel_source
from aios_lib.params import load_params
run = open_run(load_params("parameters/kernel-tiny.yaml"), run_dir=sys.argv[1], plan=False, phase="03")
cfg = kernel_config.configure(run, kernel_source.source_tree(run))
print("building", flush=True)
b = kernel_build.build(run, cfg)
print("built", b.image, b.cached, b.objects, flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_kernel_build_is_continued_by_make_and_never_used_half_done(tmp_path, monkeypatch):
    """The tiny kernel's build (parameters/kernel-tiny.yaml) with its Python SIGKILLed at a random
    object: the watchdog stops make, the entry has no marker (a leftover make continues), and the
    rerun keeps every object that was whole (its .cmd written), builds the rest and marks it complete."""
    real = Path(os.environ.get("AIOS_CACHE") or Path.home() / ".cache" / "synapse")
    tmp_cache = tmp_path / "cache"
    tmp_cache.mkdir()
    (real / "kernel-src").mkdir(parents=True, exist_ok=True)
    (tmp_cache / "kernel-src").symlink_to(real / "kernel-src")  # the extracted source, not the builds
    monkeypatch.setenv("AIOS_CACHE", str(tmp_cache))  # cache.Entry here looks where the builds go
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-c", KBUILD, str(tmp_path / "killed")], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    objects = _rng().randint(20, 500)  # of about 1,000
    end = time.time() + 600
    while time.time() < end and p.poll() is None:
        if _count(tmp_cache / "kernel-build", ".o") >= objects:
            break
        time.sleep(0.2)
    assert p.poll() is None, "the build ended before the kill"
    p.kill()
    p.wait()
    bdir = next(d for d in (tmp_cache / "kernel-build").iterdir() if d.is_dir())
    assert _wait_gone_in(str(bdir), 20), "the watchdog stopped the make the killed process started"
    entry = cache.Entry("kernel-build", bdir.name)
    assert not entry.complete() and not (bdir / "arch/x86/boot/bzImage").exists()
    lo = {str(x.path): x for x in cache.leftovers(tmp_cache)}
    assert lo[str(bdir)].what == "incomplete entry" and "make continues" in lo[str(bdir)].action
    # objects kbuild finished (fixdep wrote their .cmd) must survive; one without is rebuilt
    whole = {o: o.stat().st_mtime_ns for o in bdir.rglob("*.o") if (o.parent / f".{o.name}.cmd").exists()}
    assert whole, "the kill came after some objects were whole"
    again = subprocess.run([sys.executable, "-c", KBUILD, str(tmp_path / "rerun")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    built = again.stdout.strip().splitlines()[-1].split()
    assert built[0] == "built" and built[2] == "False" and Path(built[1]).stat().st_size > 500_000
    assert entry.complete() and entry.info()["release"].endswith("-synapse")
    kept = [o for o, t in whole.items() if o.exists() and o.stat().st_mtime_ns == t]
    assert len(kept) >= 0.9 * len(whole), f"{len(whole) - len(kept)} of {len(whole)} whole objects were rebuilt"
    notes = [e["argv"][1] for e in read_journal(tmp_path / "rerun" / "commands.jsonl") if e["argv"][0] == "#"]
    assert any("an interrupted build left" in n and "make continues it" in n for n in notes)


def _count(root: Path, suffix: str) -> int:
    """Files named ``*suffix`` under ``root`` while a build creates and removes folders in it
    (os.walk skips what vanished; a glob would raise)."""
    return sum(f.endswith(suffix) for _, _, files in os.walk(root) for f in files)


def _wait_gone_in(path: str, seconds: float) -> bool:
    """No process (but zombies) has ``path`` in its command line or as its working directory."""
    end = time.time() + seconds
    while time.time() < end:
        busy = []
        for q in psutil.process_iter(["cmdline", "cwd", "status"]):
            if q.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(path in a for a in q.info["cmdline"] or []) or (q.info["cwd"] or "").startswith(path):
                busy.append(q)
        if not busy:
            return True
        time.sleep(0.2)
    return False


BOOTSTRAP = """
import sys
from aios_lib.context import open_run
from aios_lib.params import load_params, parse_params
from aios_lib.system import image
base = load_params("parameters/image-debian.yaml").model_dump(mode="json", exclude={"source_file"})
base["target"].update(image=sys.argv[2], confirm=sys.argv[2])
base["system"]["use_image_cache"] = False
run = open_run(parse_params(base, "<image-debian in tmp>"), run_dir=sys.argv[1], phase="02")
b = image.start(run)
for step in (image.validate, image.prepare, image.partition, image.format, image.mount):
    step(run, b)
print("bootstrapping", flush=True)
image.bootstrap(run, b)
print("bootstrapped", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_power_loss_during_debootstrap_leaves_nothing_the_rerun_takes_for_done(tmp_path, monkeypatch):
    """Power lost while debootstrap fills the mounted root: the image stays mounted and attached and
    half-bootstrapped. The next run releases the mounts and the loop device (journaled), and the
    half-built image is rebuilt from scratch, never skipped as up to date."""
    from aios_lib.context import open_run
    from aios_lib.params import load_params, parse_params
    from aios_lib.system import image, target

    img = tmp_path / "synapse-debian.img"
    monkeypatch.setenv("AIOS_MOUNT_BASE", str(tmp_path / "mnt"))
    log = tmp_path / "killed.log"
    with log.open("w") as f:  # a file, not a pipe: a full pipe would pause the step before the kill
        p = subprocess.Popen([sys.executable, "-c", BOOTSTRAP, str(tmp_path / "killed"), str(img)], cwd=ROOT,
                             stdout=f, stderr=subprocess.STDOUT)
    end = time.time() + 300
    while "bootstrapping" not in log.read_text() and p.poll() is None and time.time() < end:
        time.sleep(0.1)
    assert p.poll() is None and "bootstrapping" in log.read_text(), log.read_text()[-3000:]
    time.sleep(_rng().uniform(1, 20))
    power_loss(p.pid)
    p.wait()
    base = load_params(ROOT / "parameters/image-debian.yaml").model_dump(mode="json", exclude={"source_file"})
    base["target"].update(image=str(img), confirm=str(img))
    base["system"]["use_image_cache"] = False
    params = parse_params(base, "<image-debian in tmp>")
    try:
        run = open_run(params, run_dir=tmp_path / "rerun", phase="run")
        spec = target.open_target(run)
        assert _targets_under(spec.mount_dir) and _loops(img), "the kill left the target mounted and attached"
        assert target.read_manifest(spec).get("complete") is False
        found = resume.recover(run, ledger=tmp_path / "no-ledger.json", scan_cache=False)
        assert _targets_under(spec.mount_dir) == [] and _loops(img) == []
        assert found and "detached /dev/loop" in found[0]
        entries = read_journal(tmp_path / "rerun" / "commands.jsonl")
        assert any(e["argv"][:2] == ["losetup", "-d"] and e["note"] == "left attached by an interrupted run"
                   for e in entries)
        run02 = open_run(params, run_dir=tmp_path / "rerun", phase="02")
        b = image.start(run02)
        assert image.validate(run02, b).state == "left incomplete by an interrupted build: rebuilt from scratch"
        prep = image.prepare(run02, b)
        assert not b.skip and "rebuilt from scratch (an interrupted build of the same inputs" in prep.detail
    finally:
        for t in _targets_under(tmp_path / "mnt"):
            subprocess.run(["umount", "-l", t])
        for loop in _loops(img):
            subprocess.run(["losetup", "-d", loop])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_aios_run_killed_in_a_phase_resumes_there(tmp_path):
    """``aios run`` SIGKILLed while phase 04 runs a long command: the kernel and the command stop
    (no orphan keeps working), run.json says phase 04 was running, and ``aios run --resume``
    runs 04 again into the same folder, keeping 01 and its results."""
    flag = tmp_path / "long"
    flag.write_text("")
    secs = str(300 + os.getpid() % 89)
    root = _fake_project(tmp_path, f"import pathlib\nif pathlib.Path({str(flag)!r}).exists():\n"
                                   f"    run.runner.work(['sleep', '{secs}'])")
    env = _env(tmp_path, root)
    p = subprocess.Popen([sys.executable, "-m", "aios_lib.cli", "run", "01", "04", "--params",
                          str(root / "parameters/p.yaml"), "--quiet"], cwd=ROOT, env={**os.environ, **env},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 300
    while not _procs_with(secs) and time.time() < end and p.poll() is None:
        time.sleep(0.1)
    assert _procs_with(secs), "phase 04 started its long command"
    time.sleep(_rng().uniform(0, 3))
    p.kill()
    p.wait()
    assert _wait_gone(secs, 20), "nothing the killed run started keeps running"
    d = next((tmp_path / "out" / "box").iterdir())
    meta = read_json(d / "run.json")
    assert "finished" not in meta and [(x["phase"], x["status"]) for x in meta["phases"]] == [("01", "ok"),
                                                                                              ("04", "running")]
    flag.unlink()
    r = _aios("run", "--resume", str(d), "--quiet", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = read_json(d / "run.json")
    assert [(x["phase"], x["status"]) for x in meta["phases"]] == [("01", "ok"), ("04", "ok")]
    assert meta["resumes"][0]["how_it_ended"] == "interrupted during phase 04"
    assert read_json(d / "results.json")["04"]["value"] == 42
