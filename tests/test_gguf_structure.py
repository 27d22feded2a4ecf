"""GGUF structure checked before any binary opens a file: malformed variants built from the real
SmolLM2 GGUF and from a directly written SYNTHETIC file, each refused with one plain sentence; the
architectures and tensor types come from a llama.cpp source tree; `aios model check FILE`."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from aios_lib.params.runtime import SMOLLM2_SHA256
from aios_lib.runtime import gguf_structure as gs, model, synthetic
from aios_lib.runtime.model import ModelError

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512)
NUMPY_WORDS = ("IndexError", "out of bounds", "reshape", "array of size", "numpy", "Traceback")


@pytest.fixture(scope="module")
def tiny_q4km(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "tiny-Q4_K_M.gguf"
    synthetic.write(str(out), dtype="Q4_K_M", **TINY)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _patch(path: Path, at: int, data: bytes) -> Path:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)
    return path


def _entry_fields(st: gs.Structure, t: gs.Tensor) -> dict[str, int]:
    """Byte positions of one tensor-table entry's fields: n_dims, type, offset."""
    n_name = len(t.name.encode())
    n_dims_at = t.entry_at + 8 + n_name
    type_at = n_dims_at + 4 + 8 * len(t.dims)
    return {"n_dims": n_dims_at, "type": type_at, "offset": type_at + 4}


def _refused(path: Path, **kw) -> str:
    with pytest.raises(ModelError) as e:
        model.inspect_gguf(path, hash_file=False, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert not any(w in msg for w in NUMPY_WORDS), msg
    return msg


# ---- the reader agrees with the gguf package on sound files ------------------------------------------

@pytest.mark.parametrize("which", ["smollm2", "tiny_q4km"])
def test_sound_files_read_like_the_gguf_package(request, which):
    import gguf

    path = request.getfixturevalue(which)
    path = getattr(path, "path", path)
    st = gs.read_structure(path)
    reader = gguf.GGUFReader(str(path))
    assert [t.name for t in st.tensors] == [t.name for t in reader.tensors]
    assert [(t.start, t.n_bytes, t.type_name) for t in st.tensors] == \
        [(int(t.data_offset), int(t.n_bytes), t.tensor_type.name) for t in reader.tensors]
    assert st.architecture == "llama" and st.data_start % st.alignment == 0


# ---- malformed variants of the real model ------------------------------------------------------------

@pytest.mark.parametrize("size,words", [
    (0, "too short even for a GGUF header"),
    (20, "too short even for a GGUF header"),
    (300, "it is truncated at byte 300"),
    (4096, "claims 49,152 items, more than the 2,989 bytes left before the end of the file at byte 4,096"),
    (100_000, "before the end of the file at byte 100,000"),
    (50_000_000, "points past the end of the file"),
])
def test_truncated_smollm2_is_said_in_words(smollm2, tmp_path, size, words):
    bad = _copy(smollm2.path, tmp_path / "cut.gguf")
    with open(bad, "r+b") as f:
        f.truncate(size)
    msg = _refused(bad)
    assert words in msg and msg.endswith(model.FETCH_AGAIN)


def test_header_counts_beyond_any_real_model(smollm2, tmp_path):
    bad = _patch(_copy(smollm2.path, tmp_path / "kv.gguf"), 16, struct.pack("<Q", 1 << 40))
    assert "claims 1,099,511,627,776 metadata keys" in _refused(bad)
    bad = _patch(_copy(smollm2.path, tmp_path / "t.gguf"), 8, struct.pack("<Q", 1 << 40))
    assert "claims 1,099,511,627,776 tensors" in _refused(bad)
    bad = _patch(_copy(smollm2.path, tmp_path / "z.gguf"), 8, struct.pack("<Q", 0))
    assert "holds no tensors" in _refused(bad)


@pytest.mark.parametrize("offset,data,words", [
    (0, b"GGUX", "not a GGUF file: it starts with b'GGUX'"),
    (0, b"<!do", "HTML page"),
    (4, struct.pack("<I", 99), "GGUF version is 99; llama.cpp reads versions 2 and 3"),
    (4, struct.pack("<I", 1), "GGUF version 1, which llama.cpp no longer reads"),
])
def test_corrupted_magic_and_version(smollm2, tmp_path, offset, data, words):
    assert words in _refused(_patch(_copy(smollm2.path, tmp_path / "h.gguf"), offset, data))


def test_unknown_tensor_type(smollm2, tmp_path):
    st = gs.read_structure(smollm2.path)
    t = st.tensors[0]
    bad = _patch(_copy(smollm2.path, tmp_path / "type.gguf"), _entry_fields(st, t)["type"], struct.pack("<I", 200))
    msg = _refused(bad)
    assert f"tensor `{t.name}` has tensor type 200, which this llama.cpp does not know" in msg


def test_overlapping_tensors(smollm2, tmp_path):
    st = gs.read_structure(smollm2.path)
    a, b = st.tensors[0], st.tensors[1]
    bad = _patch(_copy(smollm2.path, tmp_path / "overlap.gguf"), _entry_fields(st, b)["offset"],
                 struct.pack("<Q", a.offset))
    msg = _refused(bad)
    assert "overlap" in msg and f"`{a.name}`" in msg and f"`{b.name}`" in msg


def test_misaligned_and_out_of_file_tensor(smollm2, tmp_path):
    st = gs.read_structure(smollm2.path)
    t = st.tensors[-1]
    at = _entry_fields(st, t)["offset"]
    bad = _patch(_copy(smollm2.path, tmp_path / "align.gguf"), at, struct.pack("<Q", t.offset + 1))
    assert f"tensor `{t.name}` starts at data offset {t.offset + 1:,}, which is not a multiple" in _refused(bad)
    bad = _patch(_copy(smollm2.path, tmp_path / "past.gguf"), at, struct.pack("<Q", st.file_size))
    assert f"tensor `{t.name}` points past the end of the file" in _refused(bad)


def test_absurd_array_and_unknown_value_type(smollm2, tmp_path):
    data = smollm2.path.read_bytes()[:4096]
    key = b"tokenizer.ggml.model"
    at = data.index(key) + len(key)  # its value type follows the key
    bad = _patch(_copy(smollm2.path, tmp_path / "vt.gguf"), at, struct.pack("<I", 42))
    assert "metadata key `tokenizer.ggml.model` has value type 42, which GGUF does not define" in _refused(bad)


def test_architecture_missing(smollm2, tmp_path):
    data = smollm2.path.read_bytes()[:4096]
    at = data.index(b"general.architecture")
    bad = _patch(_copy(smollm2.path, tmp_path / "noarch.gguf"), at, b"general.architecturX")
    assert "names no architecture" in _refused(bad)


# ---- malformed variants of the SYNTHETIC file ------------------------------------------------------

def test_synthetic_dimension_count_and_duplicate_name(tiny_q4km, tmp_path):
    st = gs.read_structure(tiny_q4km)
    t = st.tensors[2]
    bad = _patch(_copy(tiny_q4km, tmp_path / "dims.gguf"), _entry_fields(st, t)["n_dims"], struct.pack("<I", 7))
    assert f"tensor `{t.name}` has 7 dimensions; ggml allows 1 to 4" in _refused(bad)
    q = next(x for x in st.tensors if x.name == "blk.0.attn_q.weight")
    k = next(x for x in st.tensors if x.name == "blk.0.attn_k.weight")
    bad = _patch(_copy(tiny_q4km, tmp_path / "dup.gguf"), k.entry_at + 8, q.name.encode())
    assert "tensor name `blk.0.attn_q.weight` appears twice" in _refused(bad)


def test_synthetic_array_longer_than_the_file(tiny_q4km, tmp_path):
    data = tiny_q4km.read_bytes()[:65536]
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4  # value type ARRAY, item type STRING, then the count
    bad = _patch(_copy(tiny_q4km, tmp_path / "arr.gguf"), at, struct.pack("<Q", 1 << 60))
    assert "metadata key `tokenizer.ggml.tokens` claims 1,152,921,504,606,846,976 items" in _refused(bad)


def test_synthetic_block_misfit(tiny_q4km, tmp_path):
    st = gs.read_structure(tiny_q4km)
    t = next(x for x in st.tensors if x.type_name == "Q4_K")
    bad = _patch(_copy(tiny_q4km, tmp_path / "cols.gguf"), _entry_fields(st, t)["n_dims"] + 4,
                 struct.pack("<Q", t.dims[0] + 1))
    assert f"tensor `{t.name}` has {t.dims[0] + 1:,} columns, not a multiple of the Q4_K block of 256" in _refused(bad)


# ---- what the built llama.cpp supports ---------------------------------------------------------------

def _tree(tmp_path: Path, archs: list[str]) -> Path:
    tree = tmp_path / "llama.cpp"
    (tree / "src").mkdir(parents=True)
    lines = ["static const std::map<llm_arch, const char *> LLM_ARCH_NAMES = {",
             '    { LLM_ARCH_CLIP,             "clip"             }, // dummy, only used by llama-quantize']
    lines += [f'    {{ LLM_ARCH_{a.upper()},   "{a}" }},' for a in archs]
    lines += ['    { LLM_ARCH_UNKNOWN,          "(unknown)"        },', "};", "", "static const std::map<x> OTHER = {",
              '    { LLM_ARCH_LLAMA, "not an architecture list" },', "};"]
    (tree / "src" / "llama-arch.cpp").write_text("\n".join(lines) + "\n")
    return tree


def test_architectures_are_read_from_the_source_tree(tmp_path):
    assert gs.supported_architectures(_tree(tmp_path, ["llama", "qwen2"])) == {"llama", "qwen2"}
    assert gs.supported_architectures(tmp_path / "nowhere") is None


def test_architecture_the_build_does_not_support(smollm2, tmp_path):
    known = model.supported(_tree(tmp_path, ["qwen2", "gemma3"]))
    msg = _refused(smollm2.path, llama_cpp=known)
    assert "its architecture `llama` is not one of the 2 this llama.cpp supports" in msg
    assert msg.endswith(model.OTHER_BUILD)
    info = model.inspect_gguf(smollm2.path, hash_file=False, llama_cpp=model.supported(_tree(tmp_path / "b", ["llama"])))
    assert info.checked_against and info.architecture == "llama"


def test_the_pinned_llama_cpp_source(smollm2, make_run):
    """The real pinned tree (fetched as phase 04 fetches it, or from the cache): its LLM_ARCH_NAMES
    has llama and no dummy clip."""
    from aios_lib.runtime import llama

    tree = llama.fetch_source(make_run())
    archs = gs.supported_architectures(tree)
    assert "llama" in archs and "clip" not in archs and len(archs) > 50
    types = gs.supported_types(tree)
    assert types[12] == "Q4_K" and 4 not in types  # Q4_2 was removed
    assert model.inspect_gguf(smollm2.path, hash_file=False, llama_cpp=model.supported(tree)).checked_against


# ---- aios model check ------------------------------------------------------------------------------

def _aios(*args):
    return subprocess.run([sys.executable, "-m", "aios_lib.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_aios_model_check_prints_a_summary(smollm2):
    r = _aios("model", "check", str(smollm2.path))
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    assert out.startswith(f"{smollm2.path}: a sound GGUF (272 tensors")
    for words in ("architecture       llama", "parameters         134.5 M (134,515,008)",
                  "quantisation       Q4_1; tensors: Q4_1×", "context length     8192",
                  f"sha256             {SMOLLM2_SHA256}", f"size               {smollm2.file_size / 1e6:,.1f} MB"):
        assert words in out, words
    assert len(out.splitlines()) <= 24  # one screen


def test_aios_model_check_says_what_is_wrong(smollm2, tmp_path):
    bad = _copy(smollm2.path, tmp_path / "cut.gguf")
    with open(bad, "r+b") as f:
        f.truncate(50_000_000)
    r = _aios("model", "check", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "points past the end of the file" in lines[0] and "Traceback" not in r.stderr
