"""runner.spawn (background processes) and a real llama-server streaming tokens."""
import time

import pytest

from aios_lib.core.journal import Journal, read_journal
from aios_lib.core.runner import CommandFailed, Runner


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


# ---- llama-server -------------------------------------------------------------------------
def test_parse_sse_and_metrics():
    from aios_lib.measure import server

    assert server.parse_sse_line('data: {"content": " Paris", "stop": false}') == {"content": " Paris", "stop": False}
    assert server.parse_sse_line("data: [DONE]") is None and server.parse_sse_line(": ping") is None
    assert server.parse_sse_line("data: {broken") is None
    m = server.parse_metrics("# HELP llamacpp:x y\n# TYPE llamacpp:x counter\nllamacpp:tokens_predicted_total 32\n"
                             "llamacpp:predicted_tokens_seconds 62.98\n")
    assert m == {"llamacpp:tokens_predicted_total": 32.0, "llamacpp:predicted_tokens_seconds": 62.98}
    p = server.free_port()
    assert 1024 < p < 65536


def test_server_plan_mode_starts_nothing(tmp_path):
    from aios_lib.measure import server
    from aios_lib.context import open_run
    from aios_lib.params import parse_params

    run = open_run(parse_params({"schema_version": 1}), run_dir=tmp_path / "r", plan=True, phase="05")
    lat = server.latency(run, "/nonexistent/llama-server", "/nonexistent/model.gguf", threads=2, n_predict=16)
    assert lat["planned"] and lat["itl_ms"] == [] and lat["jitter"] is None
    e = read_journal(tmp_path / "r" / "commands.jsonl")
    assert len(e) == 1 and e[0]["planned"] and "--metrics" in e[0]["argv"] and "127.0.0.1" in e[0]["argv"]


@pytest.mark.slow
def test_real_llama_server_streams_tokens_with_latency_percentiles(llama_build, smollm2, make_run):
    import requests

    from aios_lib.measure import server

    run = make_run(phase="05")
    with server.LlamaServer(run, llama_build.binary("llama-server"), smollm2.path, threads=1) as srv:
        assert requests.get(srv.url + "/health", timeout=5).status_code == 200
        s = srv.stream("The capital of France is", 24)
        m = srv.metrics()
        pid = srv.proc.pid
    # every token arrived as its own event, and the client's rate agrees with the server's timings
    assert len(s.arrivals) == 24 and len(s.itl_ms) == 23 and s.text.strip()
    summ = s.summary()
    assert 0 < summ["itl_ms"]["p50"] <= summ["itl_ms"]["p95"] <= summ["itl_ms"]["p99"]
    assert summ["client_tg_ts"] == pytest.approx(s.timings["predicted_per_second"], rel=0.35)
    assert m["llamacpp:tokens_predicted_total"] >= 24
    # stopped cleanly by SIGTERM, and journaled
    res = srv.proc.result
    assert res.rc == 0 and not res.timed_out
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    entries = read_journal(run.dir / "commands.jsonl")
    assert any("llama-server" in e["cmdline"] and e["rc"] == 0 for e in entries)


@pytest.mark.slow
def test_latency_helper_real(llama_build, smollm2, make_run):
    from aios_lib.measure import server

    run = make_run(phase="05")
    lat = server.latency(run, llama_build.binary("llama-server"), smollm2.path, threads=1, n_predict=16,
                         prompts=["Once upon a time"], repeats=2)
    assert not lat["planned"] and len(lat["streams"]) == 2
    assert lat["jitter"]["n"] == 30 and lat["jitter"]["p99"] >= lat["jitter"]["p50"] > 0
