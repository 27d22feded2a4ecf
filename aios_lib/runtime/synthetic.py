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
FORMAT_VERSION = 2

#: quantisation types written directly (no llama-quantize): the tensor types each file type gets,
#: as llama-quantize chooses them for a llama model (checked against llama-quantize by a test):
#: (base type, the type of attn_v/ffn_down in "more bits" layers, output.weight, token_embd.weight)
DIRECT = {
    "Q4_0": ("Q4_0", "Q4_0", "Q6_K", "Q4_0"),
    "Q8_0": ("Q8_0", "Q8_0", "Q8_0", "Q8_0"),
    "Q4_K_M": ("Q4_K", "Q6_K", "Q6_K", "Q4_K"),
    "Q5_K_M": ("Q5_K", "Q6_K", "Q6_K", "Q5_K"),
}
def _f16(x: float) -> bytes:
    import numpy as np

    return np.float16(x).tobytes()


#: fixed bytes in every block so the weights come out like a trained model's (mean 0, std about
#: 0.02, as the float path draws them): {type: [(offset, bytes)]}. Random scales would give weights
#: near 1, the activations overflow and llama.cpp's speed is no longer what a real model gets.
#: K types: 12 scale bytes = 6-bit scale 32 and min 32 for all eight sub-blocks; dmin centres q.
BLOCK_CONSTANTS = {
    "Q4_0": [(0, _f16(2.0 ** -8))],  # w = (q - 8) d, q in 0..15
    "Q8_0": [(0, _f16(2.0 ** -12))],  # w = q d, q in -128..127
    "Q4_K": [(0, _f16(1.36e-4)), (2, _f16(1.36e-4 * 7.5)), (4, bytes([0xA0] * 8 + [0] * 4))],
    "Q5_K": [(0, _f16(6.8e-5)), (2, _f16(6.8e-5 * 15.5)), (4, bytes([0xA0] * 8 + [0] * 4))],
    "Q6_K": [(192, bytes([16] * 16)), (208, _f16(6.76e-5))],  # w = d sc (q - 32), sc int8 = 16
}


def more_bits(i: int, n: int) -> bool:
    """llama-quantize's ``use_more_bits``: the first and last eighth of the layers and every third
    in between get the larger type for attn_v and ffn_down in the _M mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_types(quant: str, n_layer: int) -> dict[str, str]:
    """{tensor name: GGML type name} of a ``quant`` file with ``n_layer`` layers (norms are F32)."""
    base, more, out, embd = DIRECT[quant]
    types = {"token_embd.weight": embd, "output.weight": out}
    for i in range(n_layer):
        for k in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            types[f"blk.{i}.{k}.weight"] = base
        for k in ("attn_v", "ffn_down"):
            types[f"blk.{i}.{k}.weight"] = more if more_bits(i, n_layer) else base
    return types


def random_blocks(rng, qtype: str, rows: int, cols: int):
    """Random quantised data of one tensor: random quants, every block's scales fixed
    (:data:`BLOCK_CONSTANTS`) so the weights have a trained model's spread. The kernels do the
    same work whatever the quants are; the bytes' size and layout decide the speed."""
    import numpy as np
    import gguf

    qt = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[qt]
    if cols % block:
        raise ValueError(f"{cols} columns are not a multiple of the {qtype} block ({block})")
    nblocks = cols // block
    data = rng.integers(0, 256, size=(rows, nblocks, size), dtype=np.uint8)
    for off, raw in BLOCK_CONSTANTS[qtype]:
        data[:, :, off:off + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return data.reshape(rows, nblocks * size), qt


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
    """``dtype`` f16/f32: random float weights (quantise them with llama-quantize); or one of
    :data:`DIRECT` (Q4_0, Q8_0, Q4_K_M, Q5_K_M): random quantised blocks written directly."""
    import numpy as np
    import gguf

    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must be a multiple of n_head and n_head of n_head_kv")
    head_dim = n_embd // n_head
    direct = dtype.upper() in DIRECT
    npdt = np.float32 if dtype == "f32" else np.float16
    rng = np.random.default_rng(seed)
    qtypes = tensor_types(dtype.upper(), n_layer) if direct else {}
    cache: dict = {}

    def rand(*shape, tensor: str = ""):
        if not direct:
            return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(npdt)
        qtype = qtypes[tensor]
        key = (shape, qtype)  # one random draw per shape and type, shared by the layers
        if key not in cache:
            cache[key] = random_blocks(rng, qtype, *shape)
        return cache[key]

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
    ftype = {"f16": "MOSTLY_F16", "f32": "ALL_F32"}.get(dtype, f"MOSTLY_{dtype.upper()}")
    w.add_file_type(gguf.LlamaFileType[ftype])
    if direct:
        w.add_string("synapse.synthetic_quant", f"{dtype.upper()}: random quantised blocks written directly, "
                                                "tensor types as llama-quantize chooses them")
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
    shapes = {"attn_q": (n_embd, n_embd), "attn_k": (kv, n_embd), "attn_v": (kv, n_embd),
              "attn_output": (n_embd, n_embd), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd),
              "ffn_down": (n_embd, n_ff)}
    shared = {k: rand(*s) for k, s in shapes.items()} if not direct else {}
    norm = np.ones(n_embd, dtype=np.float32)
    n_params = 0

    def add(name, arr, shape):
        nonlocal n_params
        n_params += shape[0] * shape[1] if len(shape) == 2 else shape[0]
        if isinstance(arr, tuple):  # (raw quantised bytes, type)
            w.add_tensor(name, arr[0], raw_dtype=arr[1])
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", rand(n_vocab, n_embd, tensor="token_embd.weight"), (n_vocab, n_embd))
    add("output_norm.weight", norm, (n_embd,))
    add("output.weight", rand(n_vocab, n_embd, tensor="output.weight"), (n_vocab, n_embd))
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", norm, (n_embd,))
        add(f"blk.{i}.ffn_norm.weight", norm, (n_embd,))
        for k, s in shapes.items():
            name = f"blk.{i}.{k}.weight"
            add(name, shared[k] if not direct else rand(*s, tensor=name), s)
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
    p.add_argument("--dtype", choices=["f16", "f32", *DIRECT], default="f16",
                   help="f16/f32 random weights, or a quantisation written directly as random blocks")
    a = p.parse_args(argv)
    r = write(a.out, n_embd=a.n_embd, n_layer=a.n_layer, n_head=a.n_head, n_head_kv=a.n_head_kv, n_ff=a.n_ff,
              n_vocab=a.n_vocab, seed=a.seed, dtype=a.dtype, ctx=a.ctx)
    print(f"wrote {r['path']}: {r['n_params']:,} parameters (SYNTHETIC, random weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
