"""The SYNTHETIC model written directly as quantised blocks: the same tensor types llama-quantize
chooses, weights with a trained model's spread, and llama.cpp loads and runs it."""
import numpy as np
import pytest

from aios_lib.runtime import model, synthetic

# the default model's head layout (24 heads, 8 KV heads: 3 per KV head), small
TINY = dict(n_embd=768, n_layer=16, n_head=6, n_head_kv=2, n_ff=512, n_vocab=512)


def _types(path):
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def test_more_bits_rule_of_llama_quantize():
    # llama-quantize's use_more_bits for 16 layers (seen in its Q4_K_M output of the 16-layer model)
    assert [i for i in range(16) if synthetic.more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]
    t = synthetic.tensor_types("Q4_K_M", 16)
    assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q4_K"
    assert t["blk.0.attn_v.weight"] == "Q6_K" and t["blk.2.attn_v.weight"] == "Q4_K"
    assert set(synthetic.tensor_types("Q8_0", 4).values()) == {"Q8_0"}


@pytest.mark.parametrize("qtype", ["Q4_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_random_blocks_have_a_trained_models_spread(qtype):
    from gguf import quants

    data, qt = synthetic.random_blocks(np.random.default_rng(1), qtype, 32, 1024)
    w = quants.dequantize(data, qt)
    assert w.shape == (32, 1024) and np.isfinite(w).all()
    assert 0.015 < float(w.std()) < 0.025 and abs(float(w.mean())) < 0.003 and float(np.abs(w).max()) < 0.05


@pytest.mark.parametrize("quant", list(synthetic.DIRECT))
def test_direct_file_is_a_valid_gguf_of_that_size(tmp_path, quant):
    out = tmp_path / f"m-{quant}.gguf"
    r = synthetic.write(str(out), dtype=quant, **TINY)
    info = model.inspect_gguf(out, synthetic=True)
    assert info.n_params == r["n_params"] and info.file_type == quant
    assert _types(out) == {**synthetic.tensor_types(quant, TINY["n_layer"]),
                           **{n: "F32" for n in _types(out) if n.endswith("norm.weight")}}


@pytest.mark.slow
@pytest.mark.parametrize("quant", list(synthetic.DIRECT))
def test_direct_types_equal_llama_quantize_and_it_runs(make_run, llama_build, tmp_path, quant):
    """The float model of the same shape through the verified build's llama-quantize gets exactly the
    tensor types the direct writer chooses; llama-bench runs the direct file."""
    run = make_run()
    f16 = model.synthetic_model(run, llama_build, **TINY)
    q = model.quantize(run, llama_build, f16, quant, out_dir=tmp_path)
    direct = model.synthetic_model(run, dtype=quant, **TINY)
    assert _types(direct.path) == _types(q.path)
    assert abs(direct.file_size - q.file_size) < 4096  # the same bytes per tensor; metadata differs
    check = model.load_check(run, llama_build, direct)
    assert check["t/s"]["pp"] > 0 and check["t/s"]["tg"] > 0
