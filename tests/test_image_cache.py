"""Images in the build cache (core.cache.publish, system.target's cache helpers) and the manifest
next to an image: every write goes through the runner, planned in plan mode."""
from __future__ import annotations

import json
import os
import time

import pytest

from aios_lib.core import cache
from aios_lib.core.journal import Journal, read_journal
from aios_lib.core.runner import Runner
from aios_lib.system import target


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _image(path, data: bytes):
    path.write_bytes(data)
    return path


def test_publish_copies_renames_and_marks_complete_through_the_runner(runner, tmp_path, cache_root):
    img = _image(tmp_path / "t.img", b"image bytes")
    info = {"key": "k1", "masked": ["a.service"]}
    dst = target.publish_image(runner, img, "base-image", "k1", info)
    assert dst == cache_root / "base-image" / "k1" / target.IMAGE_FILE and dst.read_bytes() == b"image bytes"
    assert target.cached_image("base-image", "k1") == dst
    assert target.cached_info("base-image", "k1") == info
    assert not list((cache_root / "base-image" / "k1").glob(".*.tmp"))
    cmds = [e["cmdline"] for e in read_journal(tmp_path / "commands.jsonl")]
    assert cmds[1] == f"cp --sparse=always {img} {dst.with_name('.disk.img.tmp')}"
    assert cmds[2] == f"mv {dst.with_name('.disk.img.tmp')} {dst}"
    assert cmds[3].startswith(f"write {dst.parent / cache.MARKER} ")  # the marker last


def test_publish_keeps_the_newest_entries(runner, tmp_path, cache_root):
    img = _image(tmp_path / "t.img", b"x")
    for i, key in enumerate(["old", "mid", "new"]):
        target.publish_image(runner, img, "synapse-os", key, {"n": i}, keep=2)
        marker = cache_root / "synapse-os" / key / cache.MARKER
        os.utime(marker, (time.time() - 100 + i, time.time() - 100 + i))  # completed in this order
    assert target.cached_image("synapse-os", "old") is None and not (cache_root / "synapse-os" / "old").exists()
    assert target.cached_image("synapse-os", "mid") and target.cached_image("synapse-os", "new")
    removals = [e for e in read_journal(tmp_path / "commands.jsonl") if e["argv"][:2] == ["rm", "-rf"]]
    assert [e["argv"][2] for e in removals] == [str(cache_root / "synapse-os" / "old")]


def test_an_incomplete_entry_is_not_an_image(cache_root):
    d = cache_root / "base-image" / "k2"
    d.mkdir(parents=True)
    (d / target.IMAGE_FILE).write_bytes(b"half")  # copied, never marked complete (killed run)
    assert target.cached_image("base-image", "k2") is None


def test_publish_in_plan_mode_writes_nothing(tmp_path, cache_root):
    rn = Runner(journal=Journal(tmp_path / "j.jsonl"), plan=True)
    img = _image(tmp_path / "t.img", b"x")
    target.publish_image(rn, img, "base-image", "k3", {"a": 1})
    assert not cache_root.exists()
    entries = read_journal(tmp_path / "j.jsonl")
    assert [e["argv"][0] for e in entries] == ["mkdir", "cp", "mv", "write"] and all(e["planned"] for e in entries)


def test_manifest_merges_and_is_read_only_beside_its_image(runner, tmp_path):
    img = _image(tmp_path / "t.img", b"x")
    m = target.Manifest(img)
    assert m.path == tmp_path / "t.img.synapse.json" and m.read() == {}
    m.write(runner, {"key": "k", "complete": False})
    m.write(runner, {"complete": True})
    got = m.read()
    assert got["key"] == "k" and got["complete"] is True and got["time"]
    os_manifest = target.Manifest(img, ".synapse-os.json")
    os_manifest.write(runner, {"key": "s"})
    os_manifest.write(runner, {"complete": False}, fresh=True)
    assert "key" not in os_manifest.read() and m.read()["key"] == "k"
    (tmp_path / "t.img.synapse.json").write_text("{not json")
    assert m.read() == {}
    img.unlink()
    os_manifest.path.write_text(json.dumps({"key": "s"}))
    assert os_manifest.read() == {}  # a manifest without its image describes nothing
    assert [e["argv"][0] for e in read_journal(tmp_path / "commands.jsonl")] == ["write"] * 4
