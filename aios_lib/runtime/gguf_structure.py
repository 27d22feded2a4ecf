"""The structure of a GGUF file, read with ``struct`` before any binary (or numpy reader) opens it.

A GGUF file is a header (magic ``GGUF``, version, tensor count, metadata key count), the metadata
(key, value type, value), the tensor table (name, dimensions, type, offset) and, after padding to
``general.alignment``, the tensor data. :func:`read_structure` walks all of it and refuses what
llama.cpp would refuse at load or what would make it read the wrong bytes:

* counts beyond what any real model has (:data:`MAX_KV`, :data:`MAX_TENSORS`), strings and arrays
  longer than the bytes left in the file;
* a value type or tensor type the format (or the built llama.cpp) does not define;
* tensor data that starts off the alignment, runs past the end of the file, or overlaps another
  tensor's data; duplicate names; more than 4 dimensions;
* an architecture the built llama.cpp does not list (``LLM_ARCH_NAMES`` in its
  ``src/llama-arch.cpp``, read by :func:`supported_architectures`).

Each refusal is a :class:`GGUFProblem` whose text is one plain sentence ("truncated at byte N",
"tensor X points past the end", "unknown tensor type 200"); the caller adds what to do.
"""
from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

MAGIC = b"GGUF"
#: the versions llama.cpp reads (version 1 used 32-bit counts and is no longer read)
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
#: sane limits: the largest public models have a few thousand tensors and under a hundred keys
MAX_KV = 65_536
MAX_TENSORS = 1_000_000
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # GGML_MAX_NAME - 1 (the name and its NUL fit in 64 bytes)
MAX_KEY = 65_535

#: value type -> (name, struct format, size); STRING (8) and ARRAY (9) have their own layout
VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "<B", 1), 1: ("INT8", "<b", 1), 2: ("UINT16", "<H", 2), 3: ("INT16", "<h", 2),
    4: ("UINT32", "<I", 4), 5: ("INT32", "<i", 4), 6: ("FLOAT32", "<f", 4), 7: ("BOOL", "<?", 1),
    8: ("STRING", "", 8), 9: ("ARRAY", "", 12), 10: ("UINT64", "<Q", 8), 11: ("INT64", "<q", 8),
    12: ("FLOAT64", "<d", 8),
}


class GGUFProblem(ValueError):
    """What is wrong with a GGUF file, in one sentence (without the file name or the fix)."""

    def __init__(self, sentence: str, kind: str = "corrupt"):
        #: corrupt (a damaged or cut-off file), unsupported (sound, but this llama.cpp cannot use it)
        self.kind = kind
        super().__init__(sentence)


@dataclass
class Tensor:
    name: str
    dims: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int  # relative to the data section
    start: int = 0  # absolute byte offset in the file
    n_bytes: int = 0
    n_elements: int = 0
    #: where this tensor's entry of the tensor table starts in the file (for reports and tests)
    entry_at: int = 0

    @property
    def end(self) -> int:
        return self.start + self.n_bytes


@dataclass
class ArrayValue:
    """A metadata array: its element type and length (its items are kept only when short)."""

    item_type: str
    count: int
    items: list | None = None


@dataclass
class Structure:
    path: Path
    file_size: int
    version: int
    kv: dict[str, Any]
    tensors: list[Tensor]
    alignment: int
    data_start: int
    value_types: dict[str, str] = field(default_factory=dict)

    @property
    def architecture(self) -> str | None:
        a = self.kv.get("general.architecture")
        return a if isinstance(a, str) else None

    def field(self, key: str) -> Any:
        return self.kv.get(key)


# ---- what the built llama.cpp knows ----------------------------------------------------------
@lru_cache(maxsize=8)
def _arch_names(arch_cpp: str, mtime: float) -> frozenset[str]:
    text = Path(arch_cpp).read_text(errors="replace")
    block = text[text.find("LLM_ARCH_NAMES"):]
    block = block[:block.find("};")]
    names = set()
    for line in block.splitlines():
        m = re.search(r'\{\s*LLM_ARCH_\w+\s*,\s*"([^"]+)"\s*\}', line)
        comment = line.split("//", 1)[1] if "//" in line else ""
        # "clip" is listed as a dummy only llama-quantize uses: no model loads with it
        if m and "dummy" not in comment and not m.group(1).startswith("("):  # "(unknown)" is no architecture
            names.add(m.group(1))
    return frozenset(names)


def supported_architectures(tree: str | Path | None) -> frozenset[str] | None:
    """The architectures a llama.cpp source tree (or a build's copy of it) loads, from
    ``src/llama-arch.cpp``; None when the tree is not there (nothing to check against)."""
    if tree is None:
        return None
    f = Path(tree) / "src" / "llama-arch.cpp"
    if not f.exists():
        return None
    names = _arch_names(str(f), f.stat().st_mtime)
    return names or None


@lru_cache(maxsize=8)
def _ggml_types(header: str, mtime: float) -> dict[int, str]:
    out = {}
    for line in Path(header).read_text(errors="replace").splitlines():
        m = re.match(r"^\s*GGML_TYPE_(\w+)\s*=\s*(\d+)\s*,", line)  # commented-out (removed) types do not match
        if m and m.group(1) != "COUNT":
            out[int(m.group(2))] = m.group(1)
    return out


def supported_types(tree: str | Path | None) -> dict[int, str] | None:
    """Tensor type id -> name for the ggml of a llama.cpp tree (``enum ggml_type`` in ggml.h)."""
    if tree is None:
        return None
    h = Path(tree) / "ggml" / "include" / "ggml.h"
    if not h.exists():
        return None
    return _ggml_types(str(h), h.stat().st_mtime) or None


def _gguf_sizes() -> dict[int, tuple[str, int, int]]:
    """Type id -> (name, block size, bytes per block) from the gguf package."""
    import gguf

    return {int(t): (t.name, int(b), int(s)) for t, (b, s) in gguf.GGML_QUANT_SIZES.items()}


# ---- reading ---------------------------------------------------------------------------------------
class _Cursor:
    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFProblem(f"it is truncated at byte {self.size:,}: {what} at byte {self.pos:,} needs "
                              f"{n:,} bytes and the file ends after {self.size - self.pos:,}")

    def unpack(self, fmt: str, n: int, what: str):
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.u64(f"the length of {what}")
        if limit is not None and n > limit:
            raise GGUFProblem(f"{what} at byte {self.pos - 8:,} claims to be {n:,} bytes long (at most {limit:,} "
                              "are allowed): the header is corrupt")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")


def _value(c: _Cursor, vtype: int, what: str, keep_items: bool) -> Any:
    if vtype not in VALUE_TYPES:
        raise GGUFProblem(f"{what} has value type {vtype}, which GGUF does not define (0-12)")
    name, fmt, size = VALUE_TYPES[vtype]
    if name == "STRING":
        return c.string(what)
    if name == "ARRAY":
        itype = c.u32(f"the item type of {what}")
        count = c.u64(f"the length of {what}")
        if itype not in VALUE_TYPES:
            raise GGUFProblem(f"{what} is an array of value type {itype}, which GGUF does not define (0-12)")
        iname, ifmt, isize = VALUE_TYPES[itype]
        least = 8 if iname in ("STRING", "ARRAY") else isize
        if count * least > c.size - c.pos:
            raise GGUFProblem(f"{what} claims {count:,} items, more than the {c.size - c.pos:,} bytes left before the "
                              f"end of the file at byte {c.size:,} can hold: the file is truncated or the header is "
                              "corrupt")
        if iname in ("STRING", "ARRAY"):
            items = [_value(c, itype, f"item {i} of {what}", False) for i in range(count)]
            return ArrayValue(iname, count, items if keep_items else None)
        c.need(count * isize, what)
        items = None
        if keep_items and count <= 64:
            items = list(struct.unpack_from(f"<{count}{ifmt[1]}", c.buf, c.pos))
        c.pos += count * isize
        return ArrayValue(iname, count, items)
    return c.unpack(fmt, size, what)


def read_structure(path: str | Path, *, architectures: Iterable[str] | None = None,
                   types: dict[int, str] | None = None) -> Structure:
    """Read and check a GGUF file's structure; raise :class:`GGUFProblem` (one sentence).

    ``architectures``: the names the built llama.cpp supports (None: not checked).
    ``types``: tensor type id -> name of the built ggml (None: the gguf package's types)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise GGUFProblem(f"it is {size} bytes long, too short even for a GGUF header (24 bytes): the download "
                          "was cut off")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf, size)
        magic = bytes(buf[:4])
        if magic != MAGIC:
            what = " (it looks like an HTML page: a download link that returned a web page?)" \
                if magic.lstrip()[:1] == b"<" else ""
            raise GGUFProblem(f"it is not a GGUF file: it starts with {magic!r}, not b'GGUF'{what}")
        c.pos = 4
        version = c.u32("the version")
        if version == 1:
            raise GGUFProblem("it is GGUF version 1, which llama.cpp no longer reads: convert the model again",
                              "unsupported")
        if version not in VERSIONS:
            raise GGUFProblem(f"its GGUF version is {version:,}; llama.cpp reads versions 2 and 3: the header is "
                              "corrupt or the file is from a newer format")
        n_tensors = c.u64("the tensor count")
        n_kv = c.u64("the metadata key count")
        if n_kv > MAX_KV:
            raise GGUFProblem(f"its header claims {n_kv:,} metadata keys; a real model has well under {MAX_KV:,}: "
                              "the header is corrupt")
        if n_tensors > MAX_TENSORS:
            raise GGUFProblem(f"its header claims {n_tensors:,} tensors; a real model has well under "
                              f"{MAX_TENSORS:,}: the header is corrupt")
        if n_tensors == 0:
            raise GGUFProblem("it holds no tensors (its header says 0): there are no weights to load")

        kv: dict[str, Any] = {}
        vtypes: dict[str, str] = {}
        for i in range(n_kv):
            key = c.string(f"the name of metadata key #{i + 1}", MAX_KEY)
            vtype = c.u32(f"the value type of metadata key `{key}`")
            if key in kv:
                raise GGUFProblem(f"metadata key `{key}` appears twice: the header is corrupt")
            kv[key] = _value(c, vtype, f"metadata key `{key}`", True)
            vtypes[key] = VALUE_TYPES.get(vtype, ("?",))[0]

        alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFProblem(f"general.alignment is {alignment!r}, not a positive power of two: the header is corrupt")

        sizes = _gguf_sizes()
        known = types if types is not None else {t: n for t, (n, _, _) in sizes.items()}
        tensors: list[Tensor] = []
        names: set[str] = set()
        for i in range(n_tensors):
            entry_at = c.pos
            name = c.string(f"the name of tensor #{i + 1}", 1 << 16)
            if len(name.encode()) > MAX_NAME:
                raise GGUFProblem(f"tensor #{i + 1} has a name of {len(name.encode())} bytes (`{name[:40]}...`); "
                                  f"ggml allows at most {MAX_NAME}: the header is corrupt")
            if name in names:
                raise GGUFProblem(f"tensor name `{name}` appears twice: the header is corrupt")
            names.add(name)
            n_dims = c.u32(f"the dimension count of tensor `{name}`")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFProblem(f"tensor `{name}` has {n_dims:,} dimensions; ggml allows 1 to {MAX_DIMS}: the "
                                  "header is corrupt")
            dims = tuple(c.u64(f"dimension {d} of tensor `{name}`") for d in range(n_dims))
            if any(d == 0 for d in dims):
                raise GGUFProblem(f"tensor `{name}` has a dimension of 0 ({' x '.join(map(str, dims))}): the header "
                                  "is corrupt")
            n_el = 1
            for d in dims:
                n_el *= d
            if n_el >= 2**63:
                raise GGUFProblem(f"tensor `{name}` claims {' x '.join(f'{d:,}' for d in dims)} elements, more than "
                                  "any file can hold: the header is corrupt")
            type_id = c.u32(f"the type of tensor `{name}`")
            offset = c.u64(f"the data offset of tensor `{name}`")
            if type_id not in known:
                raise GGUFProblem(f"tensor `{name}` has tensor type {type_id}, which this llama.cpp does not know "
                                  f"(it knows {len(known)} types, numbered up to {max(known)})")
            if type_id not in sizes:
                raise GGUFProblem(f"tensor `{name}` has tensor type {known[type_id]} ({type_id}), which llama.cpp "
                                  "knows but Synapse's gguf package cannot size: update the gguf package",
                                  "unsupported")
            tname, block, bsize = sizes[type_id]
            if dims[0] % block:
                raise GGUFProblem(f"tensor `{name}` has {dims[0]:,} columns, not a multiple of the {tname} block "
                                  f"of {block}: the header is corrupt")
            tensors.append(Tensor(name, dims, type_id, tname, offset, n_bytes=n_el // block * bsize,
                                  n_elements=n_el, entry_at=entry_at))

        data_start = -(-c.pos // alignment) * alignment
        if data_start > size:
            raise GGUFProblem(f"it is truncated at byte {size:,}: the tensor data should start at byte "
                              f"{data_start:,}")
    for t in tensors:
        t.start = data_start + t.offset
        if t.offset % alignment:
            raise GGUFProblem(f"tensor `{t.name}` starts at data offset {t.offset:,}, which is not a multiple of "
                              f"the file's alignment ({alignment} bytes): the header is corrupt")
        if t.end > size:
            raise GGUFProblem(f"tensor `{t.name}` points past the end of the file: its data would end at byte "
                              f"{t.end:,} but the file has {size:,} bytes (truncated)")
    ordered = sorted(tensors, key=lambda t: (t.start, t.end))
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise GGUFProblem(f"tensors `{a.name}` and `{b.name}` overlap: `{a.name}` runs from byte {a.start:,} to "
                              f"{a.end:,} and `{b.name}` starts at byte {b.start:,}: the header is corrupt")
    st = Structure(path, size, version, kv, tensors, alignment, data_start, vtypes)
    arch = st.architecture
    if not arch:
        raise GGUFProblem("it names no architecture (general.architecture is missing)")
    if architectures is not None:
        archs = set(architectures)
        if arch not in archs:
            raise GGUFProblem(f"its architecture `{arch}` is not one of the {len(archs)} this llama.cpp supports "
                              f"(src/llama-arch.cpp): llama.cpp would refuse it at load", "unsupported")
    return st
