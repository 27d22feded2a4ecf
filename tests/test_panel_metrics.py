"""Pure parts of the panel: Prometheus parsing, tolerant names, counter-delta rates, renderers."""
import math

import pytest

from aios_lib.panel.metrics import (RateMeter, Scrape, canonical_metrics, format_bytes, missing_core_metrics,
                                    normalise, parse_metrics, pick, printed_resolution, quant_from_name)


def exposition(prompt_tok, prompt_s, gen_tok, gen_s, processing=0, deferred=0, prefix="llamacpp:"):
    """/metrics text in the exact shape llama.cpp 0c1e570 writes (server-task.cpp to_metrics)."""
    rows = [("prompt_tokens_total", "counter", prompt_tok), ("prompt_seconds_total", "counter", prompt_s),
            ("tokens_predicted_total", "counter", gen_tok),
            ("tokens_predicted_seconds_total", "counter", gen_s),
            ("requests_processing", "gauge", processing), ("requests_deferred", "gauge", deferred)]
    out = []
    for name, typ, v in rows:
        out += [f"# HELP {prefix}{name} x", f"# TYPE {prefix}{name} {typ}", f"{prefix}{name} {v}"]
    return "\n".join(out) + "\n"


def test_normalise_prefixes_and_separators():
    assert normalise("llamacpp:tokens_predicted_total") == "tokens_predicted_total"
    assert normalise("llamacpp_tokens_predicted_total") == "tokens_predicted_total"
    assert normalise("LLAMACPP:Requests_Deferred") == "requests_deferred"
    assert normalise("tokens_predicted_total") == "tokens_predicted_total"


@pytest.mark.parametrize("name", ["metrics_underscore.txt", "metrics_2024_kvcache.txt"])
def test_other_builds_parse_to_the_same_canonical_names(fixtures, name):
    vals = canonical_metrics(parse_metrics((fixtures / "panel" / name).read_text()))
    assert missing_core_metrics(vals) == []
    assert vals["tokens_predicted_total"] > 0 and vals["tokens_predicted_seconds_total"] > 0


def test_underscore_fixture_values(fixtures):
    vals = canonical_metrics(parse_metrics((fixtures / "panel" / "metrics_underscore.txt").read_text()))
    assert vals["tokens_predicted_total"] == 512
    assert vals["tokens_predicted_seconds_total"] == pytest.approx(5.12)
    assert vals["requests_processing"] == 1 and vals["requests_deferred"] == 2


def test_aliases_and_millisecond_counters():
    # an exporter that counts milliseconds under an older name is scaled to seconds
    vals = {"t_tokens_generation_total": 2500.0, "n_tokens_predicted_total": 250.0}
    assert pick(vals, "tokens_predicted_seconds_total") == pytest.approx(2.5)
    assert pick(vals, "tokens_predicted_total") == 250.0
    assert pick(vals, "requests_deferred") is None
    # a counter without the _total suffix is still found
    assert pick({"tokens_predicted": 7.0}, "tokens_predicted_total") == 7.0


def test_labelled_samples_are_summed_and_garbage_rejected():
    text = ('# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 3\n'
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"} 2\n')
    assert parse_metrics(text)["spec_decode_num_accepted_tokens_per_pos_total"] == 5
    with pytest.raises(ValueError):
        parse_metrics("this is { not prometheus\n")


def test_rate_is_counter_delta_not_gauge():
    m = RateMeter()
    u0 = m.update(Scrape.from_text(exposition(10, 0.1, 100, 1.0), t=1000.0))
    assert u0.generation is None  # first scrape: only a baseline
    # 64 tokens in 0.5 s of generation time, over a 2 s poll window
    u1 = m.update(Scrape.from_text(exposition(30, 0.2, 164, 1.5, processing=1), t=1002.0))
    assert u1.generation.tps == pytest.approx(128.0)
    assert u1.generation.throughput == pytest.approx(32.0)  # tokens per wall second
    assert u1.prompt.tps == pytest.approx(200.0)
    assert m.sparkline == [pytest.approx(128.0)]
    # nothing finished in the next window: idle (None), recorded as 0 in the sparkline
    u2 = m.update(Scrape.from_text(exposition(30, 0.2, 164, 1.5), t=1003.0))
    assert u2.generation.tps is None and m.sparkline[-1] == 0.0
    assert m.gen.last.tps == pytest.approx(128.0)  # the last busy window is kept for display
    assert m.cumulative("gen") == pytest.approx(164 / 1.5)


def test_counter_reset_starts_a_new_baseline():
    m = RateMeter()
    m.update(Scrape.from_text(exposition(500, 2.0, 5000, 50.0), t=0.0))
    u = m.update(Scrape.from_text(exposition(10, 0.05, 32, 0.3), t=1.0))  # server restarted
    assert u.reset and u.generation is None and m.resets == 1
    u = m.update(Scrape.from_text(exposition(10, 0.05, 96, 0.8), t=2.0))
    assert u.generation.tps == pytest.approx(64 / 0.5)


def test_delta_below_printed_resolution_waits_for_more():
    # past 10^6 the server prints 6 significant digits: 1.23457e+06 tokens
    assert printed_resolution(1.23457e6) == pytest.approx(10.0)
    m = RateMeter()
    m.update(Scrape.from_text(exposition(0, 0, "1.23457e+06", 12345.6), t=0.0))
    u = m.update(Scrape.from_text(exposition(0, 0, "1.23458e+06", 12345.7), t=1.0))
    assert u.generation is None  # a 10-token step is at the resolution: no rate from it
    u = m.update(Scrape.from_text(exposition(0, 0, "1.23757e+06", 12375.6), t=30.0))
    assert u.generation.tps == pytest.approx(3000 / 30.0)


def test_history_is_time_bounded():
    m = RateMeter(window_s=10)
    tok, sec = 0, 0.0
    for i in range(30):
        tok += 50
        sec += 0.5
        m.update(Scrape.from_text(exposition(0, 0, tok, sec), t=float(i)))
    assert len(m.sparkline) == 11  # t = 19..29
    assert all(v == pytest.approx(100.0) for v in m.sparkline)


def test_formatting_helpers():
    assert format_bytes(96.58e6) == "92.1 MiB"
    assert format_bytes(None) == "—"
    assert quant_from_name("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_from_name("model-q4_k_m.gguf") == "Q4_K_M"
    assert quant_from_name("nothing here") is None
    assert math.isclose(printed_resolution(123.456), 0.001)


def test_live_progress_from_slots():
    from aios_lib.panel.metrics import live_rate, slot_progress

    def slots(n0, n1, task1=7, busy1=True):
        # the shape of GET /slots in llama.cpp 0c1e570 (server_slot::to_json), trimmed
        return [{"id": 0, "n_ctx": 1024, "is_processing": True, "id_task": 5,
                 "next_token": [{"has_next_token": True, "n_remain": 10, "n_decoded": n0}]},
                {"id": 1, "n_ctx": 1024, "is_processing": busy1, "id_task": task1,
                 "next_token": [{"has_next_token": True, "n_remain": 10, "n_decoded": n1}]},
                {"id": 2, "n_ctx": 1024, "is_processing": False}]

    a, b = slot_progress(slots(10, 3)), slot_progress(slots(60, 53))
    assert a == {(0, 5): 10, (1, 7): 3}
    assert live_rate(a, b, 2.0) == pytest.approx(50.0)  # (50 + 50) tokens in 2 s
    # slot 1 moved on to another task: only slot 0 counts
    assert live_rate(a, slot_progress(slots(30, 4, task1=8)), 1.0) == pytest.approx(20.0)
    assert live_rate(a, slot_progress(slots(30, 4, busy1=False)), 1.0) == pytest.approx(20.0)
    assert live_rate(None, b, 1.0) is None and live_rate(a, {}, 1.0) is None
    assert slot_progress({"error": "slots disabled"}) == {}
