"""The Neural Control Panel: a Textual dashboard of a running llama-server.

Layout (fits 80x24, works over SSH; no mouse needed)::

    status line: URL, ONLINE / UNREACHABLE / METRICS OFF, refresh interval, paused
    ┌ Model ───────────────┐┌ Tokens/s ─────────────────────────────┐
    │ name, arch, quant,   ││ generation / prompt t/s, sparkline,    │
    │ size, context, slots ││ requests in flight / deferred          │
    └──────────────────────┘└────────────────────────────────────────┘
    ┌ Memory ───────────────────────────────────────────────────────┐
    │ RAM bar: model mapping | rest of server | other | cache | free │
    │ VRAM per NVIDIA GPU (hidden without one)                       │
    └───────────────────────────────────────────────────────────────┘
    ┌ Cores ────────────────────────────────────────────────────────┐
    │ per logical CPU load, SMT siblings in one [group], ● = pinned  │
    └───────────────────────────────────────────────────────────────┘
    footer: q quit · p pause · + faster · - slower

The collector (sources.Collector) does the blocking work in a thread; render_* turn its
PanelState into Rich text and are pure, so tests can check them without a terminal.
"""
from __future__ import annotations

import asyncio
import time

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Footer, Sparkline, Static

from .metrics import format_bytes, format_rate
from .sources import Collector, PanelState

#: refresh intervals the +/- keys step through (seconds)
INTERVALS = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]

BARS = " ▁▂▃▄▅▆▇█"


def _human_count(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f}"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# ---- pure renderers -----------------------------------------------------------------------------
def render_status(st: PanelState | None, interval: float, paused: bool, url: str) -> Text:
    t = Text()
    t.append(" Synapse ", style="bold black on cyan")
    t.append(f" {url} ", style="bold")
    if st is None:
        t.append(" connecting… ", style="bold yellow")
    elif not st.reachable:
        down = _ago(max(st.t - (st.down_since or st.t), 0))
        t.append(" UNREACHABLE ", style="bold white on red")
        t.append(f" {st.error or 'no answer'} · down {down} · retry {interval:g}s", style="red")
    elif st.metrics == "off":
        t.append(" METRICS OFF ", style="bold black on yellow")
        t.append(f" {st.metrics_note}", style="yellow")
    elif st.health and st.health != "ok":
        t.append(f" {st.health.upper()} ", style="bold black on yellow")
    else:
        t.append(" ONLINE ", style="bold black on green")
        if st.metrics == "error":
            t.append(f" {st.metrics_note}", style="yellow")
    if st is None or st.reachable:
        t.append(f"  every {interval:g}s", style="dim")
    if paused:
        t.append("  PAUSED", style="bold magenta")
    return t


def render_model(st: PanelState | None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    m = st.model if st else None
    if m is None or not m.name:
        t.append("no model known yet" if not st or not st.reachable else "waiting for /props", style="dim")
        return t
    t.append(f"{m.name}\n", style="bold")
    t.append(f"{m.gguf_name or ('reading GGUF header…' if m.path else '—')}\n", style="dim")
    t.append(f"{m.architecture or '—'}")
    t.append(" · ", style="dim")
    t.append(f"{m.quant or '—'}", style="bold")
    t.append(" · ", style="dim")
    t.append(f"{format_bytes(m.size) if m.size else '—'}\n")
    t.append(f"{_human_count(m.n_params)}")
    t.append(" params", style="dim")
    if m.slots:
        t.append(f" · {m.slots}")
        t.append(" slots", style="dim")
    t.append("\n")
    t.append("ctx ", style="dim")
    t.append(f"{m.n_ctx:,}" if m.n_ctx else "—")
    if m.n_ctx_train:
        t.append(f" / train {m.n_ctx_train:,}", style="dim")
    t.append("\n")
    p = st.process
    if p is not None:
        t.append("pid ", style="dim")
        t.append(f"{p.pid}")
        if p.threads:
            t.append(f" · {p.threads} threads", style="dim")
    elif st.reachable:
        t.append("not a local process", style="dim")
    return t


def render_rates(st: PanelState | None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if st is None:
        return t
    if not st.reachable:
        t.append("server unreachable\n", style="bold red")
        if st.gen_last is not None:
            t.append(f"last seen {format_rate(st.gen_last.tps)} t/s", style="dim")
        return t
    if st.metrics == "off":
        t.append("metrics are off\n", style="bold yellow")
        t.append("start llama-server with --metrics", style="yellow")
        return t
    if st.missing and len(st.missing) >= 4:
        t.append("/metrics lacks the token counters\n", style="yellow")
        t.append(", ".join(st.missing[:3]), style="dim")
        return t
    gen_now = st.gen.tps if st.gen is not None else None
    shown = gen_now if gen_now is not None else (st.gen_last.tps if st.gen_last else None)
    t.append("gen    ", style="dim")
    t.append(f"{format_rate(shown):>6} t/s", style="bold green" if gen_now is not None else "green")
    if gen_now is None and st.gen_last is not None and st.gen_last_t is not None:
        t.append(f" idle {_ago(max(st.t - st.gen_last_t, 0))}", style="dim")
    if st.gen_avg:
        t.append(f"  avg {format_rate(st.gen_avg)}", style="dim")
    t.append("\n")
    p_now = st.prompt.tps if st.prompt is not None else None
    p_shown = p_now if p_now is not None else (st.prompt_last.tps if st.prompt_last else None)
    t.append("prompt ", style="dim")
    t.append(f"{format_rate(p_shown):>6} t/s", style="bold cyan" if p_now is not None else "cyan")
    if st.prompt_avg:
        t.append(f"  avg {format_rate(st.prompt_avg)}", style="dim")
    return t


def render_requests(st: PanelState | None) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if st is None or not st.reachable or st.metrics != "on":
        return t
    t.append("in flight ", style="dim")
    t.append(f"{st.processing:.0f}" if st.processing is not None else "—", style="bold")
    t.append("  deferred ", style="dim")
    t.append(f"{st.deferred:.0f}" if st.deferred is not None else "—",
             style="bold red" if st.deferred else "bold")
    if st.live is not None:
        t.append("  live ", style="dim")
        t.append(f"{format_rate(st.live)} t/s", style="green")
    else:
        t.append("  generated ", style="dim")
        t.append(_human_count(st.tokens_total))
    return t


def _bar(parts: list[tuple[float, str]], width: int) -> Text:
    """A stacked bar: each (fraction, style) gets its share of ``width`` cells."""
    t = Text()
    total = sum(max(f, 0) for f, _ in parts) or 1.0
    used = 0
    for i, (f, style) in enumerate(parts):
        n = round(max(f, 0) / total * width) if i < len(parts) - 1 else width - used
        n = max(min(n, width - used), 0)
        t.append("█" * n, style=style)
        used += n
    return t


MEM_STYLES = {"model": "magenta", "server": "yellow", "other": "blue", "cache": "cyan", "free": "grey35"}


def render_memory(st: PanelState | None, width: int = 74) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if st is None or st.memory is None:
        return t
    m = st.memory
    if m.model is not None:
        parts = [("model", m.model), ("server", m.server_other or 0), ("other", m.other or 0),
                 ("cache", m.cache), ("free", m.free)]
    else:
        parts = [("other", m.used), ("cache", m.cache), ("free", m.free)]
    t.append("RAM ", style="bold")
    t.append_text(_bar([(v / m.total, MEM_STYLES[k]) for k, v in parts], max(width - 18, 10)))
    t.append(f" {format_bytes(m.total)}\n")
    labels = {"model": "model", "server": "server", "other": "other", "cache": "cache", "free": "free"}
    for i, (k, v) in enumerate(parts):
        t.append(("  " if i else "") + "■ ", style=MEM_STYLES[k])
        t.append(f"{labels[k]} {_short_bytes(v)}")
    if m.model is None:
        t.append("\n")
        if st.process is not None and st.process.note:
            note = st.process.note
        elif not st.reachable:
            note = "server down: no model mapping"
        else:
            note = "server process not local: no model mapping"
        t.append(note, style="dim")
    elif st.process is not None and st.process.model_mapped:
        t.append("\n")
        t.append(f"model file mapped {format_bytes(st.process.model_mapped)}, "
                 f"{100 * (m.model or 0) / st.process.model_mapped:.0f}% resident", style="dim")
    if st.gpus:
        for g in st.gpus[:2]:
            t.append("\n")
            t.append(f"VRAM{g.index} ", style="bold")
            frac = g.used / g.total if g.total else 0
            t.append_text(_bar([(frac, "green"), (1 - frac, "grey35")], max(width - 30, 10)))
            t.append(f" {format_bytes(g.used)}/{format_bytes(g.total)}")
            if g.util is not None:
                t.append(f" {g.util:.0f}%", style="dim")
    return t


def _short_bytes(n: float | None) -> str:
    """92M, 4.6G: the memory legend must fit one 80-column line."""
    if n is None:
        return "—"
    if n < 2**30:
        return f"{n / 2**20:.0f}M"
    return f"{n / 2**30:.1f}G"


def _load_style(p: float) -> str:
    if p >= 85:
        return "bold red"
    if p >= 50:
        return "yellow"
    if p >= 15:
        return "green"
    return "dim"


def render_cores(st: PanelState | None, width: int = 76) -> Text:
    """One cell per logical CPU, SMT siblings bracketed together, pinned CPUs marked ●."""
    t = Text(no_wrap=False)
    if st is None or not st.cpu:
        return t
    pinned = set(st.process.affinity or []) if st.process is not None else set()
    all_cpus = set(range(len(st.cpu)))
    mark_pins = bool(pinned) and pinned != all_cpus
    groups = [g for g in (st.groups or [[c] for c in range(len(st.cpu))]) if g]
    n = len(st.cpu)
    compact = n > 48  # big machines: one character per CPU
    line_len = 0
    for g in groups:
        cells = [c for c in g if c < n]
        if not cells:
            continue
        seg = Text()
        if compact:
            seg.append("[" if len(cells) > 1 else "")
            for c in cells:
                p = st.cpu[c]
                ch = BARS[min(int(p / 100 * (len(BARS) - 1) + 0.5), len(BARS) - 1)]
                seg.append(ch, style=_load_style(p) + (" underline" if c in pinned and mark_pins else ""))
            seg.append("]" if len(cells) > 1 else " ")
        else:
            seg.append("[" if len(cells) > 1 else " ", style="dim")
            for i, c in enumerate(cells):
                p = st.cpu[c]
                if i:
                    seg.append("|", style="dim")
                mark = "●" if c in pinned else " "
                seg.append(f"{c:>2}", style="bold" if c in pinned else "dim")
                seg.append(mark, style="cyan")
                ch = BARS[min(int(p / 100 * (len(BARS) - 1) + 0.5), len(BARS) - 1)]
                seg.append(ch, style=_load_style(p))
                seg.append(f"{p:3.0f}", style=_load_style(p))
            seg.append("]" if len(cells) > 1 else " ", style="dim")
        if line_len and line_len + len(seg) + 1 > width:
            t.append("\n")
            line_len = 0
        elif line_len:
            t.append(" ")
            line_len += 1
        t.append_text(seg)
        line_len += len(seg)
    t.append("\n")
    if pinned:
        t.append(f"● server affinity: {_cpulist(sorted(pinned))}", style="cyan")
        if st.process is not None and st.process.cpu_percent is not None:
            t.append(f"  server CPU {st.process.cpu_percent:.0f}%", style="dim")
    elif st.reachable:
        t.append("server affinity unknown (not a local process)", style="dim")
    else:
        t.append("server down", style="dim")
    t.append("  (load %)", style="dim")
    if any(len(g) > 1 for g in groups):
        t.append("  [a|b] = SMT siblings", style="dim")
    return t


def _cpulist(cpus: list[int]) -> str:
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(f"{cpus[i]}-{cpus[j]}" if j > i else f"{cpus[i]}")
        i = j + 1
    return ",".join(out)


# ---- the app ------------------------------------------------------------------------------------
class PanelApp(App):
    """``aios panel``: watch a llama-server. Keys: q quit, p pause, + faster, - slower."""

    TITLE = "Synapse · Neural Control Panel"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    Static { text-wrap: nowrap; text-overflow: ellipsis; }
    #cores { text-wrap: wrap; }
    #status { height: 1; }
    #top { height: 8; }
    #model { width: 40%; height: 8; border: round $accent; padding: 0 1; }
    #rates-box { width: 60%; height: 8; border: round $success; padding: 0 1; }
    #rates { height: 2; }
    #spark { height: 2; margin: 0 0; }
    #requests { height: 1; }
    #memory { height: 6; border: round $warning; padding: 0 1; }
    #cores { height: 1fr; min-height: 4; border: round $primary; padding: 0 1; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause"),
        Binding("plus,equals_sign", "faster", "faster", key_display="+"),
        Binding("minus", "slower", "slower", key_display="-"),
    ]

    def __init__(self, url: str = "http://127.0.0.1:8080", interval: float = 1.0,
                 collector: Collector | None = None, pid: int | None = None, runner=None):
        super().__init__()
        self.url = url if "://" in url else "http://" + url
        self.collector = collector or Collector(self.url, runner=runner, pid=pid)
        self.interval = float(interval)
        self.paused = False
        self.state: PanelState | None = None
        self._timer = None
        self._lock = asyncio.Lock()
        self.poll_count = 0
        self._texts: dict[str, Text] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="top"):
            yield Static(id="model")
            with Vertical(id="rates-box"):
                yield Static(id="rates")
                yield Sparkline([], id="spark")
                yield Static(id="requests")
        yield Static(id="memory")
        yield Static(id="cores")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#model").border_title = "Model"
        self.query_one("#rates-box").border_title = "Tokens/s (Δ counters)"
        self.query_one("#memory").border_title = "Memory"
        self.query_one("#cores").border_title = "Cores"
        self._render()
        self._schedule()
        self.call_later(self.poll_now)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.interval, self._tick)

    async def _tick(self) -> None:
        if not self.paused and not self._lock.locked():
            await self.poll_now()

    async def poll_now(self) -> PanelState | None:
        """Collect once (in a thread: HTTP and /proc reads block) and redraw."""
        async with self._lock:
            try:
                st = await asyncio.to_thread(self.collector.collect)
            except Exception as e:  # never crash the panel on one bad poll
                st = PanelState(self.collector.url, time.time(), reachable=False,
                                error=f"poll failed: {type(e).__name__}: {e}")
            self.state = st
            self.poll_count += 1
            self._render()
            return st

    def _show(self, wid: str, text: Text) -> None:
        self._texts[wid] = text
        self.query_one(wid, Static).update(text)

    def _render(self) -> None:
        try:
            self._draw()
        except NoMatches:  # a poll that ended while the screen starts or shuts down: nothing to draw on
            pass

    def _draw(self) -> None:
        st = self.state
        self._show("#status", render_status(st, self.interval, self.paused, self.url))
        self._show("#model", render_model(st))
        self._show("#rates", render_rates(st))
        spark = self.query_one("#spark", Sparkline)
        data = st.sparkline[-60:] if st else []
        spark.data = data if any(data) else []
        title = "Tokens/s (Δ counters)"
        if st and st.sparkline:
            title += f" · last {len(st.sparkline)} polls"
        self.query_one("#rates-box").border_title = title
        self._show("#requests", render_requests(st))
        w = max(self.size.width - 6, 40)
        self._show("#memory", render_memory(st, width=w))
        self._show("#cores", render_cores(st, width=w))

    # ---- keys ----
    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self._render()
        if not self.paused:
            self.call_later(self.poll_now)

    def _step(self, d: int) -> None:
        i = min(range(len(INTERVALS)), key=lambda k: abs(INTERVALS[k] - self.interval))
        self.interval = INTERVALS[max(0, min(len(INTERVALS) - 1, i + d))]
        self._schedule()
        self._render()

    def action_faster(self) -> None:
        self._step(-1)

    def action_slower(self) -> None:
        self._step(+1)

    # ---- text of the screen (tests, screenshots) ----
    def screen_text(self) -> str:
        """Everything the panel shows now, as plain text."""
        return "\n".join(t.plain for t in self._texts.values())


def run_panel(url: str, interval: float = 1.0, pid: int | None = None,
              screenshot: str | None = None, after: float = 10.0) -> int:
    """Open the panel in this terminal; with ``screenshot`` run headless and save an SVG."""
    app = PanelApp(url, interval=interval, pid=pid)
    if screenshot is None:
        app.run()
        return 0

    from pathlib import Path

    async def shoot() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            end = time.time() + after
            while time.time() < end:
                await pilot.pause(0.2)
            await app.poll_now()
            await pilot.pause(0.2)
            p = Path(screenshot).resolve()
            app.save_screenshot(p.name, str(p.parent))

    asyncio.run(shoot())
    print(screenshot)
    return 0
