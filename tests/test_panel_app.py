"""The panel app headless (Textual pilot) against a port where nothing listens: it must say so,
keep retrying and obey its keys. The tests with a real llama-server are in test_panel_live.py."""
import asyncio
import socket

from aios_lib.panel.app import INTERVALS, PanelApp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_shown_and_retried_and_keys_work(tmp_path):
    port = free_port()

    async def scenario():
        app = PanelApp(f"http://127.0.0.1:{port}", interval=0.25)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(40):
                await pilot.pause(0.1)
                if app.poll_count >= 3:
                    break
            assert app.poll_count >= 3, "the panel stops polling when the server is down"
            text = app.screen_text()
            assert "UNREACHABLE" in text and "Connection refused" in text
            assert app.state.reachable is False and app.state.cpu  # the machine's view still works
            assert app.is_running
            await pilot.press("p")
            assert app.paused and "PAUSED" in app.screen_text()
            n = app.poll_count
            await pilot.pause(0.8)
            assert app.poll_count == n  # paused: no polls
            await pilot.press("minus")
            assert app.interval == INTERVALS[INTERVALS.index(0.25) + 1]
            await pilot.press("plus")
            await pilot.press("plus")
            assert app.interval == INTERVALS[0]
            await pilot.press("p")
            await pilot.pause(0.6)
            assert app.poll_count > n
            app.save_screenshot("down.svg", str(tmp_path))
            await pilot.press("q")
        assert not app.is_running

    asyncio.run(scenario())
    svg = (tmp_path / "down.svg").read_text()
    assert svg.startswith("<svg") and "UNREACHABLE" in svg


def test_aios_panel_verb_screenshot(tmp_path, capsys):
    """`aios panel --screenshot` runs the panel headless for a while and writes the SVG."""
    from aios_lib.cli import build_parser, main

    port = free_port()
    args = build_parser().parse_args(["panel", "--url", f"127.0.0.1:{port}"])
    assert (args.url, args.interval, args.pid) == (f"127.0.0.1:{port}", 1.0, None)
    out = tmp_path / "shot.svg"
    rc = main(["panel", "--url", f"http://127.0.0.1:{port}", "--interval", "0.25", "--screenshot", str(out),
               "--after", "1"])
    assert rc == 0 and str(out) in capsys.readouterr().out
    svg = out.read_text()
    assert svg.startswith("<svg") and "UNREACHABLE" in svg and f"127.0.0.1:{port}" in svg
