"""The panel against a real llama-server with the bundled SmolLM2 model (slow: needs the llama.cpp
build, cached after the first time). The server is aios_lib.measure.server.LlamaServer (started through runner.spawn)
on 127.0.0.1 at a free port; the panel is driven headless with Textual's pilot.

Run by hand under the heavy lock:
    flock /tmp/synapse-heavy.lock .venv/bin/python -m pytest tests/test_panel_live.py
Set PANEL_SCREENSHOT=docs/panel.svg to also keep the screenshot of the real run."""
import asyncio
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from aios_lib.panel.app import PanelApp
from aios_lib.panel.metrics import canonical_metrics, format_rate, parse_metrics
from aios_lib.measure.server import LlamaServer, free_port

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Write a short poem about the sea:", "List three prime numbers:",
           "Once upon a time, in a small village,"]


@contextmanager
def llama_server(run, build, model, port: int, metrics: bool = True):
    """A real llama-server on 127.0.0.1:port (aios_lib.measure.server.LlamaServer: runner.spawn, waits for
    /health, SIGTERM on exit); ``metrics=False`` drops its --metrics flag."""
    srv = LlamaServer(run, build.binary("llama-server"), model.path, threads=1, port=port, ctx=2048, parallel=2)
    if not metrics:
        srv.argv.remove("--metrics")
    with srv:
        yield srv.proc


def complete(port: int, prompt: str, n: int = 48) -> dict:
    r = requests.post(f"http://127.0.0.1:{port}/completion", timeout=120,
                      json={"prompt": prompt, "n_predict": n, "temperature": 0, "cache_prompt": False})
    r.raise_for_status()
    return r.json()


def counters(port: int) -> dict:
    return canonical_metrics(parse_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text))


async def wait_for(pilot, cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_poll(app, pilot, timeout=20.0):
    n = app.poll_count
    await wait_for(pilot, lambda: app.poll_count > n and not app._lock.locked(), timeout, "a poll")


def test_panel_on_a_real_server(llama_build, smollm2, make_run, tmp_path):
    port = free_port()
    with llama_server(make_run(), llama_build, smollm2, port) as bg:
        for p in PROMPTS[:2]:  # warm up: first requests page the model in
            complete(port, p, 8)
        result = {}
        replies = []

        async def scenario():
            app = PanelApp(f"http://127.0.0.1:{port}", interval=0.5)
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_for(pilot, lambda: app.state is not None and app.state.model.gguf_name, 60,
                               "the model and its GGUF header")
                await wait_poll(app, pilot)  # a baseline scrape of the counters
                # 1) one controlled window: pause, run completions, resume: the panel's next window
                #    covers exactly these requests, and so do the test's own scrapes of the counters
                await pilot.press("p")
                await wait_for(pilot, lambda: not app._lock.locked(), 20, "the last poll")
                before = counters(port)
                replies[:] = [await asyncio.to_thread(complete, port, p, 48) for p in PROMPTS]
                after = counters(port)
                await pilot.press("p")
                await wait_poll(app, pilot)
                st = app.state
                # the window with the completions (a timer poll may already have followed it: the
                # panel then shows this rate as the last one, marked idle)
                result["window_tokens"] = st.gen_last.tokens if st.gen_last else None
                result["panel"] = st.gen_last.tps if st.gen_last else None
                result["prompt"] = st.prompt_last.tps if st.prompt_last else None
                result["delta_tokens"] = after["tokens_predicted_total"] - before["tokens_predicted_total"]
                result["counters"] = ((after["tokens_predicted_total"] - before["tokens_predicted_total"])
                                      / (after["tokens_predicted_seconds_total"]
                                         - before["tokens_predicted_seconds_total"]))
                result["timings"] = (sum(r["timings"]["predicted_n"] for r in replies)
                                     / (sum(r["timings"]["predicted_ms"] for r in replies) / 1000))
                result["text"] = app.screen_text()
                result["state"] = st
                # 2) live: a long generation is seen while it runs (/slots progress, in flight 1),
                #    then short completions while the panel polls every 0.5 s fill the sparkline
                task = asyncio.create_task(asyncio.to_thread(
                    lambda: [complete(port, PROMPTS[1], 160)] + [complete(port, p, 32) for p in PROMPTS[:3]]))
                await wait_for(pilot, lambda: app.state.live, 60, "live tokens/s of the running request")
                result["live"] = app.state.live
                result["in_flight"] = app.state.processing
                result["running_text"] = app.screen_text()
                await wait_for(pilot, lambda: task.done(), 120, "the live completions")
                await wait_poll(app, pilot)
                await wait_poll(app, pilot)
                result["spark"] = list(app.state.sparkline)
                result["live_text"] = app.screen_text()
                app.save_screenshot("panel.svg", str(tmp_path))
                if os.environ.get("PANEL_SCREENSHOT"):
                    out = Path(os.environ["PANEL_SCREENSHOT"]).resolve()
                    app.save_screenshot(out.name, str(out.parent))
                await pilot.press("q")

        asyncio.run(scenario())
        pid = bg.pid

    panel, ctr, tim = result["panel"], result["counters"], result["timings"]
    print(f"\npanel {panel:.1f} t/s, server counters {ctr:.1f} t/s, response timings {tim:.1f} t/s, "
          f"prompt {result['prompt']}, live {result['live']}")
    assert panel and panel > 0
    assert result["window_tokens"] == result["delta_tokens"] == sum(r["timings"]["predicted_n"] for r in replies)
    assert abs(panel - ctr) / ctr < 0.10
    assert abs(panel - tim) / tim < 0.10
    assert format_rate(panel) in result["text"]  # the number is on screen
    st = result["state"]
    assert "SmolLM2" in result["text"] and st.model.architecture == "llama"
    assert st.model.gguf_name and st.model.gguf_name in result["text"]
    assert 1.3e8 < st.model.n_params < 1.4e8  # SmolLM2-135M: 134.5 M parameters
    assert st.model.quant and "Q4_1" in st.model.quant and st.model.n_ctx in (1024, 2048)
    # the local server was found by its port, and its model mapping is resident in RAM
    assert st.process is not None and st.process.pid == pid
    assert st.process.model_mapped >= 0.9 * smollm2.path.stat().st_size
    assert 0 < st.process.model_rss <= st.process.model_mapped
    assert st.memory.model == st.process.model_rss and "model" in result["text"]
    assert st.process.affinity and "server affinity" in result["text"]
    assert any(v > 0 for v in result["spark"])
    # while the long request ran: its tokens/s from /slots (wall clock, so at most the counter rate
    # plus noise) and one request in flight
    assert 0 < result["live"] < 2 * panel
    assert result["in_flight"] >= 1 and "in flight 1" in result["running_text"] and "live" in result["running_text"]
    svg = (tmp_path / "panel.svg").read_text()
    assert svg.startswith("<svg") and "SmolLM2" in svg


def test_down_then_metrics_off_then_recovers(llama_build, smollm2, make_run):
    port = free_port()
    run = make_run()

    async def scenario():
        app = PanelApp(f"http://127.0.0.1:{port}", interval=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.state is not None and not app.state.reachable, 10, "unreachable")
            assert "UNREACHABLE" in app.screen_text()
            # a server without --metrics: the panel says so, and still shows the model
            with llama_server(run, llama_build, smollm2, port, metrics=False):
                await wait_for(pilot, lambda: app.state.reachable and app.state.model.name, 30, "the server")
                await wait_poll(app, pilot)
                text = app.screen_text()
                assert "METRICS OFF" in text and "--metrics" in text and "SmolLM2" in text
            await wait_for(pilot, lambda: not app.state.reachable, 20, "the server going away")
            assert "UNREACHABLE" in app.screen_text() and app.is_running
            # it comes back with metrics: the panel recovers on its own
            with llama_server(run, llama_build, smollm2, port, metrics=True):
                await wait_for(pilot, lambda: app.state.reachable and app.state.metrics == "on", 30, "recovery")
                await asyncio.to_thread(complete, port, PROMPTS[0], 16)
                await wait_for(pilot, lambda: app.state.gen_last is not None, 20, "a rate after recovery")
                text = app.screen_text()
                assert "ONLINE" in text and "UNREACHABLE" not in text and "SmolLM2" in text
            await pilot.press("q")

    asyncio.run(scenario())
