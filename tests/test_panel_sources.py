"""The panel's readers: /proc smaps, sysfs topology, nvidia-smi, the model view, the renderers."""
import mmap
import os
import re

import psutil
import pytest

from aios_lib.panel.app import render_cores, render_memory, render_model, render_rates, render_status
from aios_lib.facts.gpu import parse_nvidia_smi
from aios_lib.panel.metrics import Rate
from aios_lib.panel.sources import (MemoryView, ModelView, PanelState, ProcessView, memory_view, model_resident_kb,
                                    model_view, parse_cpulist, parse_rollup, parse_smaps,
                                    read_process, sibling_groups)


def test_parse_cpulist():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5]
    assert parse_cpulist("") == []


def test_sibling_groups_from_sysfs_fixtures(fixtures):
    assert sibling_groups(fixtures / "panel" / "sys_cpu_smt") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert sibling_groups(fixtures / "panel" / "sys_cpu_amd") == [[0, 1], [2, 3]]


def test_sibling_groups_of_this_machine_cover_every_cpu():
    groups = sibling_groups()
    cpus = sorted(c for g in groups for c in g)
    assert cpus == list(range(psutil.cpu_count(logical=True)))


def test_parse_nvidia_smi(fixtures):
    gpus = parse_nvidia_smi((fixtures / "panel" / "nvidia_smi_query_gpu.csv").read_text())
    assert [g.index for g in gpus] == [0, 2]  # the row with [N/A] memory is skipped
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert gpus[0].used == 1843 * 2**20 and gpus[0].total == 81559 * 2**20 and gpus[0].util == 37
    assert parse_nvidia_smi("") == []


def test_smaps_of_a_real_mapped_gguf(tmp_path):
    """Map a file named like a model in this very process, touch half of it, read our own smaps."""
    f = tmp_path / "tiny-model.Q4_1.gguf"
    size = 64 * 4096
    f.write_bytes(os.urandom(size))
    with f.open("rb") as fh:
        mm = mmap.mmap(fh.fileno(), size, prot=mmap.PROT_READ)
        try:
            touched = sum(mm[i] for i in range(0, size // 2, 4096))  # fault in 32 pages
            assert touched >= 0
            text = open(f"/proc/{os.getpid()}/smaps").read()
            maps = parse_smaps(text)
            rss, mapped, path = model_resident_kb(maps, str(f))
            assert path == str(f)
            assert mapped == size // 1024
            assert 32 * 4 <= rss <= mapped  # at least the touched pages (read-ahead may add more)
            # without a model path the GGUF mapping is found by its suffix
            rss2, mapped2, _ = model_resident_kb(maps, None)
            assert mapped2 >= mapped
            view = read_process(os.getpid(), str(f))
            assert view is not None and view.model_rss == rss * 1024
            assert view.affinity == sorted(os.sched_getaffinity(0))
        finally:
            mm.close()
    rollup = parse_rollup(open(f"/proc/{os.getpid()}/smaps_rollup").read())
    assert rollup["Rss"] > 0
    assert any(m.path == "[heap]" for m in maps) and any(m.path == "" for m in maps)


def test_memory_view_splits_the_server_from_the_rest():
    me = read_process(os.getpid(), None)
    mv = memory_view(me)
    vm = psutil.virtual_memory()
    assert mv.total == vm.total
    assert mv.server_other == me.rss - (me.model_rss or 0)
    assert mv.free + mv.cache + mv.used >= vm.total - 64 * 2**20  # the parts cover RAM


def test_model_view_combines_props_models_and_gguf():
    props = {"model_path": "/m/SmolLM2-135M-Instruct.Q4_1.gguf", "model_alias": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "model_ftype": "Q4_1", "total_slots": 4, "default_generation_settings": {"n_ctx": 8192},
             "build_info": "b1-0c1e570"}
    meta = {"n_params": 134515008, "size": 101267712, "n_ctx_train": 8192, "ftype": "Q4_1"}
    gguf = {"name": "SmolLM2 135M Instruct", "architecture": "llama", "context_length": 8192}
    v = model_view(props, meta, gguf)
    assert (v.name, v.gguf_name, v.architecture, v.quant, v.n_ctx, v.slots) == (
        "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2 135M Instruct", "llama", "Q4_1", 8192, 4)
    # no GGUF readable (remote server): /props alone still names the model
    v = model_view(props, meta, None)
    assert v.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and v.architecture is None and v.n_params == 134515008
    assert model_view(None, None, None).name is None
    assert model_view({"model_path": "/x/m.gguf"}, None, None).name == "m.gguf"


def _state(**kw):
    base = dict(url="http://127.0.0.1:1", t=100.0, reachable=True, metrics="on", health="ok")
    base.update(kw)
    return PanelState(**base)


def test_renderers_show_each_state():
    down = _state(reachable=False, error="Connection refused", down_since=90.0)
    s = render_status(down, 1.0, False, down.url).plain
    assert "UNREACHABLE" in s and "Connection refused" in s and "10s" in s
    assert "unreachable" in render_rates(down).plain
    off = _state(metrics="off", metrics_note="HTTP 501: start llama-server with --metrics")
    assert "METRICS OFF" in render_status(off, 1.0, False, off.url).plain
    assert "--metrics" in render_rates(off).plain
    ok = _state(gen=Rate(64, 0.5, 2.0), prompt=Rate(20, 0.1, 2.0),
                model=ModelView(name="SmolLM2 135M Instruct", architecture="llama", quant="Q4_1",
                                size=101267712, n_params=134515008, n_ctx=8192, n_ctx_train=8192, slots=4))
    assert "ONLINE" in render_status(ok, 1.0, True, ok.url).plain
    assert "PAUSED" in render_status(ok, 1.0, True, ok.url).plain
    r = render_rates(ok).plain
    assert "128 t/s" in r and "200 t/s" in r
    m = render_model(ok).plain
    assert "SmolLM2 135M Instruct" in m and "Q4_1" in m and "llama" in m and "134.5 M" in m


def test_core_map_groups_siblings_and_marks_pins():
    st = _state(cpu=[90.0, 5.0, 50.0, 0.0, 10.0, 20.0, 30.0, 100.0], groups=[[0, 4], [1, 5], [2, 6], [3, 7]],
                process=ProcessView(pid=1, name="llama-server", affinity=[0, 1]))
    text = render_cores(st, width=76).plain
    assert "[ 0●" in text and "| 4 " in text  # cpu 0 pinned, its sibling 4 in the same bracket
    assert " 1●" in text and " 2 " in text and "● server affinity: 0-1" in text
    assert len(re.findall(r"\[ ?\d", text)) == 4 and "SMT siblings" in text
    assert len(text.splitlines()) == 2  # four pairs on one line, then the legend
    for line in text.splitlines():
        assert len(line) <= 76
    # 128 CPUs still fit an 80x24 terminal in compact mode
    big = _state(cpu=[float(i % 100) for i in range(128)], groups=[[i, i + 64] for i in range(64)],
                 process=ProcessView(pid=1, affinity=list(range(8))))
    lines = render_cores(big, width=76).plain.splitlines()
    assert len(lines) <= 6 and all(len(x) <= 76 for x in lines)


def test_memory_render_with_and_without_model():
    gib = 2**30
    st = _state(memory=MemoryView(total=24 * gib, available=20 * gib, free=18 * gib, cache=3 * gib, used=3 * gib,
                                  model=100 * 2**20, server_other=50 * 2**20, other=2 * gib),
                process=ProcessView(pid=1, model_rss=100 * 2**20, model_mapped=100 * 2**20))
    text = render_memory(st, width=74).plain
    assert "model 100M" in text and "server 50M" in text and "free 18.0G" in text
    assert "VRAM" not in text  # no GPU: hidden
    st.gpus = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 1843, 81559, 37\n")
    assert "VRAM0" in render_memory(st, width=74).plain


def test_real_server_captures(fixtures):
    """Captured from llama-server 0c1e570 with SmolLM2 (see tests/fixtures/panel/README.md)."""
    import json

    from aios_lib.panel.metrics import canonical_metrics, missing_core_metrics, parse_metrics, slot_progress

    d = fixtures / "panel"
    vals = canonical_metrics(parse_metrics((d / "metrics_0c1e570.txt").read_text()))
    assert missing_core_metrics(vals) == []
    assert vals["tokens_predicted_total"] == 200 and vals["tokens_predicted_seconds_total"] == pytest.approx(3.00791)
    props = json.loads((d / "props_0c1e570.json").read_text())
    models = json.loads((d / "v1_models_0c1e570.json").read_text())
    meta = dict(models["data"][0]["meta"], id=models["data"][0]["id"])
    v = model_view(props, meta, None)
    assert v.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and v.quant == "Q4_1"
    assert v.n_ctx == 1024 and v.n_ctx_train == 8192 and v.slots == 2 and v.n_params == 134515008
    assert slot_progress(json.loads((d / "slots_idle_0c1e570.json").read_text())) == {}  # all idle
    maps = parse_smaps((d / "smaps_llama_server.txt").read_text())
    rss, mapped, path = model_resident_kb(maps, props["model_path"])
    assert path == props["model_path"] and mapped == 94320 and 0 < rss <= mapped
