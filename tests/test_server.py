"""runner.spawn (background processes) and a real llama-server streaming tokens."""
import time

import pytest

from aios_lib.journal import Journal, read_journal
from aios_lib.runner import CommandFailed, Runner


def test_spawn_runs_in_background_and_stop_is_journaled(runner, tmp_path):
    bg = runner.spawn(["sh", "-c", "echo ready; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done"],
                      note="test server")
    try:
        deadline = time.time() + 5
        while "ready" not in bg.output() and time.time() < deadline:
            time.sleep(0.05)
        assert bg.alive() and bg.pid and "ready" in bg.output()
        assert read_journal(tmp_path / "commands.jsonl") == []  # journaled when it stops
    finally:
        res = bg.stop()
    assert not bg.alive() and res.rc == 0 and "bye" in res.stdout and not res.timed_out
    entries = read_journal(tmp_path / "commands.jsonl")
    assert len(entries) == 1 and entries[0]["kind"] == "work" and entries[0]["note"] == "test server"
    assert entries[0]["duration"] > 0
    assert bg.stop() is res  # idempotent


def test_spawn_kills_a_process_that_ignores_sigterm(runner):
    with runner.spawn(["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"]) as bg:
        deadline = time.time() + 5
        while "up" not in bg.output() and time.time() < deadline:
            time.sleep(0.05)
        t0 = time.time()
        res = bg.stop(timeout=0.5)
    assert res.timed_out and res.rc != 0 and time.time() - t0 < 5 and not bg.alive()


def test_spawn_plan_mode_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    rn = Runner(journal=Journal(tmp_path / "j.jsonl"), plan=True)
    with rn.spawn(["touch", str(marker)]) as bg:
        assert bg.planned and bg.pid is None and not bg.alive()
    assert not marker.exists()
    entries = read_journal(tmp_path / "j.jsonl")
    assert len(entries) == 1 and entries[0]["planned"] and entries[0]["argv"] == ["touch", str(marker)]


def test_spawn_missing_program_fails_clearly(runner):
    with pytest.raises(CommandFailed) as e:
        runner.spawn(["/nonexistent/server"])
    assert "/nonexistent/server" in str(e.value)
