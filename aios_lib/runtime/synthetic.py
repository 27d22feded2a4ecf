"""A SYNTHETIC llama-architecture GGUF: random weights, real shapes. Its speed is real, its text is noise.

SmolLM2-135M is 576 wide, not a multiple of 256, so llama-quantize cannot give most of its tensors
K-quants, and at 135 M parameters generation is bound by per-token overhead, not memory bandwidth.
To measure Q4_K_M against Q5_K_M and a memory-bound roofline, Phase 4 writes a llama model with
K-quant-friendly widths (default 2048 wide, 16 layers, 32/8 heads, n_ff 8192: about 1.1 B
parameters) with the ``gguf`` package and quantises it with ``llama-quantize``.

Run as a program (``python -m aios_lib.runtime.synthetic --out FILE ...``) so the runner journals and
plans it like any other build step. One random draw per tensor shape is shared by the layers
(generation stays fast and memory small); every tensor still has its own bytes in the file, so
loading and reading it costs what a real model of that size costs.

The vocabulary is a minimal SentencePiece-style ("llama") one: <unk>, <s>, </s>, the 256 byte
tokens <0x00>..<0xFF> the loader needs for byte fallback and the newline token, then filler
tokens up to ``n_vocab``.
"""
from __future__ import annotations

import argparse
import sys

#: bumped when the file this writes changes (part of the cache key)
FORMAT_VERSION = 1


def vocab(n_vocab: int):
    import numpy as np

    if n_vocab < 3 + 256 + 1:
        raise ValueError(f"n_vocab {n_vocab} is too small: 3 special + 256 byte tokens are needed")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE (llama_token_type)
    n_fill = n_vocab - len(tokens)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(n_fill):
        # distinct printable pieces: "▁a", "▁b", ..., "▁ba", ...
        s, k = "", i
        while True:
            s = letters[k % 26] + s
            k = k // 26 - 1
            if k < 0:
                break
        tokens.append("\u2581" + s)
        types.append(1)  # NORMAL
    scores = np.array([0.0] * 259 + [-float(i) for i in range(n_fill)], dtype=np.float32)
    return tokens, scores, np.array(types, dtype=np.int32)


def write(out: str, *, n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int, n_vocab: int,
          seed: int = 0, dtype: str = "f16", ctx: int = 4096, name: str | None = None) -> dict:
    import numpy as np
    import gguf

    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must be a multiple of n_head and n_head of n_head_kv")
    head_dim = n_embd // n_head
    npdt = np.float16 if dtype == "f16" else np.float32
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(npdt)

    w = gguf.GGUFWriter(out, "llama")
    w.add_name(name or f"Synapse synthetic llama {n_embd}x{n_layer} (random weights)")
    w.add_bool("synapse.synthetic", True)
    w.add_string("synapse.note", "SYNTHETIC: random weights; speed is real, text is noise")
    w.add_context_length(ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = vocab(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores.tolist())
    w.add_token_types(types.tolist())
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    # numpy shape is (rows=out, cols=in); ggml sees ne = (in, out)
    kv = n_head_kv * head_dim
    shared = {
        "attn_q": rand(n_embd, n_embd), "attn_k": rand(kv, n_embd), "attn_v": rand(kv, n_embd),
        "attn_output": rand(n_embd, n_embd), "ffn_gate": rand(n_ff, n_embd), "ffn_up": rand(n_ff, n_embd),
        "ffn_down": rand(n_embd, n_ff),
    }
    norm = np.ones(n_embd, dtype=np.float32)
    n_params = 0

    def add(name, arr):
        nonlocal n_params
        n_params += arr.size
        w.add_tensor(name, arr)

    add("token_embd.weight", rand(n_vocab, n_embd))
    add("output_norm.weight", norm)
    add("output.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", norm)
        add(f"blk.{i}.ffn_norm.weight", norm)
        for k, arr in shared.items():
            add(f"blk.{i}.{k}.weight", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    return {"path": out, "n_params": n_params}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    for k, d in (("n-embd", 2048), ("n-layer", 16), ("n-head", 32), ("n-head-kv", 8), ("n-ff", 8192),
                 ("n-vocab", 32000), ("seed", 0), ("ctx", 4096)):
        p.add_argument(f"--{k}", type=int, default=d)
    p.add_argument("--dtype", choices=["f16", "f32"], default="f16")
    a = p.parse_args(argv)
    r = write(a.out, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head, n_head_kv=a.n_head_kv, n_ff=a.n_ff,
              n_vocab=a.n_vocab, seed=a.seed, dtype=a.dtype, ctx=a.ctx)
    print(f"wrote {r['path']}: {r['n_params']:,} parameters (SYNTHETIC, random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
