"""Phase 4: llama.cpp source and build.

Two pinned source providers:

* ``pypi-sdist`` (default): the llama.cpp tree vendored in the ``llama-cpp-python`` sdist under
  ``vendor/llama.cpp``. Only PyPI needs to be reachable; the sdist's sha256 is pinned.
* ``git``: a clone of ``url`` checked out at a pinned ``ref`` (tag or commit).

The build uses CMake + Ninja in Release with ``GGML_NATIVE=ON`` (``-march=native``) by default.
``SOURCE_DATE_EPOCH`` is removed from the environment: ggml's CMake turns GGML_NATIVE off when it
is set (reproducible-build convention), silently giving a generic binary.

Each build compiles a tree of its own, ``<build>/src``: hard links to the fetched source, with the
build's pinned patches (``aios_lib/runtime/patches/llama.cpp/*.patch``) applied on top. With ccache
installed, ``CCACHE_BASEDIR`` is the build folder, so two builds that differ in one patched file
or in their targets recompile only what differs.

``build/bin/llama-*`` are small launchers next to ``lib*.so``; the whole ``bin`` folder is cached
under ``cache_dir("llama", key)`` with ``key`` a hash of the source identity, the patches, the
CMake options, the compiler version and the targets, so a rerun skips the build. Every build also
makes llama.cpp's ``test-quantize-fns`` (the CPU kernels against their reference code), which
:mod:`aios_lib.runtime.verify` runs before anything uses the build.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import cache
from ..core.paths import cache_path
from ..core.progress import build_progress
from ..facts import gather, llama as llama_facts, toolchain
from .cpus import build_jobs

#: Options every build gets. Names checked against the vendored tree's CMakeLists.txt
#: (llama.cpp 0c1e570): LLAMA_CURL is accepted but ignored (HTTP is vendored cpp-httplib).
BASE_OPTIONS = {
    "LLAMA_CURL": "OFF",
    "LLAMA_OPENSSL": "OFF",
    # ON so that test-quantize-fns can be built; only the targets asked for are compiled
    "LLAMA_BUILD_TESTS": "ON",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_TOOLS": "ON",
    "LLAMA_BUILD_SERVER": "ON",
    # ON by default: downloads the server's web UI during the build (fails offline)
    "LLAMA_USE_PREBUILT_UI": "OFF",
    "LLAMA_BUILD_UI": "OFF",
}

#: A generic x86-64 build: no -march=native, every optional x86 ISA extension off (baseline SSE2).
GENERIC_OPTIONS = {
    "GGML_NATIVE": "OFF",
    "GGML_SSE42": "OFF",
    "GGML_AVX": "OFF",
    "GGML_AVX_VNNI": "OFF",
    "GGML_AVX2": "OFF",
    "GGML_BMI2": "OFF",
    "GGML_AVX512": "OFF",
    "GGML_AVX512_VBMI": "OFF",
    "GGML_AVX512_VNNI": "OFF",
    "GGML_AVX512_BF16": "OFF",
    "GGML_FMA": "OFF",
    "GGML_F16C": "OFF",
    "GGML_AMX_TILE": "OFF",
    "GGML_AMX_INT8": "OFF",
    "GGML_AMX_BF16": "OFF",
}

DEFAULT_TARGETS = ["llama-bench", "llama-server", "llama-quantize"]

#: built with every build: llama.cpp's own test of the CPU kernels (quantize, dequantize and
#: vec_dot of every type against the reference code), run by the verification
VERIFY_TARGETS = ["test-quantize-fns"]

#: llama.cpp as its releases and distribution packages build it for CPUs: no -march=native; one CPU
#: backend module per microarchitecture (x64, sse42, sandybridge, haswell, ..., sapphirerapids), the
#: best one for this CPU chosen at load time. What a user has who does not build for the machine.
RELEASE_OPTIONS = {"GGML_NATIVE": "OFF", "GGML_BACKEND_DL": "ON", "GGML_CPU_ALL_VARIANTS": "ON",
                   "BUILD_SHARED_LIBS": "ON"}

#: pinned patches to the llama.cpp source, applied only to the builds that ask for them
PATCH_DIR = Path(__file__).resolve().parent / "patches" / "llama.cpp"

#: CMake options that exist only with a pinned patch to ggml's CMake (no code changes): a build that
#: sets one gets its patch. Both save compile time and change nothing in what runs.
OPTION_PATCHES = {
    # flags for the CPU backend only: a native build without one extension recompiles the 17
    # ggml-cpu files instead of all 279 (global CMAKE_C_FLAGS change every compile line)
    "GGML_CPU_EXTRA_FLAGS": ("cpu-extra-flags", "flags for ggml's CPU backend only (the only code compiled "
                             "with -march), so the build without an extension recompiles that backend only"),
    # a release-style build with the CPU modules this CPU can be given only (runtime/cpu_variants.py)
    "GGML_CPU_VARIANTS_ONLY": ("cpu-variants-only", "builds only the CPU backend modules named in "
                               "GGML_CPU_VARIANTS_ONLY (the one ggml's loader picks on this CPU, and x86-64-v3)"),
}


@dataclass
class LlamaBuild:
    """A llama.cpp build (or, in plan mode, the build that would be made)."""

    bin_dir: Path
    label: str
    source: dict
    cmake_options: dict
    compiler: str
    features: list[str] = field(default_factory=list)
    seconds: float | None = None
    cached: bool = False
    key: str = ""
    planned: bool = False
    targets: list[str] = field(default_factory=list)
    version: str = ""  # what `llama-bench --version` prints (first line)
    native_in_effect: bool | None = None  # GGML_NATIVE as CMakeCache.txt has it
    march: str | None = None  # the -march the compile lines use (native builds)
    built_seconds: float | None = None  # how long the build took when it was made (kept when cached)
    patches: list[dict] = field(default_factory=list)  # [{name, sha256}] applied to the source
    variant_scores: dict = field(default_factory=dict)  # release-style: each CPU module's score here

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bin_dir"] = str(self.bin_dir)
        return d

    def _repr_markdown_(self) -> str:
        if self.planned:
            head = f"**planned, not built**: llama.cpp `{self.label}` build (key `{self.key}`)"
        else:
            took = f" (built in {self.built_seconds:.0f} s)" if self.built_seconds else ""
            how = f"from cache{took}" if self.cached else f"built in {self.seconds:.0f} s"
            head = f"llama.cpp `{self.label}` build, {how}: `{self.bin_dir}`"
        opts = " ".join(f"-D{k}={v}" for k, v in self.cmake_options.items())
        rows = [head, "", f"- source: {self.source}", f"- compiler: {self.compiler}",
                f"- cmake: `{opts}`", f"- targets: {', '.join(self.targets)}"]
        for p in self.patches:
            rows.append(f"- patch `{p['name']}` (sha256 `{p['sha256'][:16]}...`): {p.get('why', '')}")
        if self.version:
            rows.append(f"- version: {self.version}")
        if self.features:
            rows.append(f"- CPU features the binary reports: {', '.join(self.features)}")
        if self.native_in_effect is not None:
            rows.append(f"- GGML_NATIVE in effect (CMakeCache): {self.native_in_effect}")
        return "\n".join(rows)


# ---- source ---------------------------------------------------------------------------------
def source_identity(src_params) -> dict:
    """What pins the source (goes into the cache key and the record)."""
    if src_params.provider == "pypi-sdist":
        return {"provider": "pypi-sdist", "package": "llama-cpp-python", "version": src_params.version,
                "sha256": src_params.sha256}
    return {"provider": "git", "url": src_params.url, "ref": src_params.ref}


def _source_key(ident: dict) -> str:
    return cache.key(ident)


def source_dir(run) -> Path:
    """Where the llama.cpp tree is (or will be) for this run's source parameters."""
    ident = source_identity(run.params.runtime.llama.source)
    return cache_path("llama-src", _source_key(ident)) / "llama.cpp"


def fetch_source(run) -> Path:
    """The llama.cpp source tree (cached); in plan mode the commands are listed, not run."""
    if run.plan:
        return _fetch_source(run)
    with cache.lock(source_dir(run).parent.with_suffix(".lock")):
        return _fetch_source(run)


def _fetch_source(run) -> Path:
    sp = run.params.runtime.llama.source
    r = run.runner
    dest = source_dir(run)
    marker = dest.parent / "complete.json"
    if marker.exists() and (dest / "CMakeLists.txt").exists():
        return dest
    if sp.provider == "pypi-sdist":
        dl = cache_path("downloads", f"llama-cpp-python-{sp.version}")
        res = r.work([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                      "--disable-pip-version-check",
                      f"llama-cpp-python=={sp.version}", "-d", str(dl)],
                     note="llama.cpp source: the llama-cpp-python sdist vendors it", timeout=1800)
        if res.planned:
            r.work(["tar", "-xzf", str(dl / f"llama_cpp_python-{sp.version}.tar.gz"), "-C", str(dest),
                    "--strip-components=3", "--wildcards", "*/vendor/llama.cpp/*"], note="extract vendor/llama.cpp")
            return dest
        files = sorted(dl.glob("llama_cpp_python-*.tar.gz")) + sorted(dl.glob("llama-cpp-python-*.tar.gz"))
        if not files:
            raise RuntimeError(f"pip download left no llama-cpp-python sdist in {dl}")
        sdist = files[-1]
        got = cache.file_sha256(sdist)
        if sp.sha256 and got != sp.sha256:
            # a download cut off by a killed run: fetch it once more before refusing
            r.work(["rm", "-f", str(sdist)], note=f"sha256 {got[:16]}... is not the pinned one: a partial or damaged "
                                                   "download, fetched again")
            r.work([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "--disable-pip-version-check", f"llama-cpp-python=={sp.version}", "-d", str(dl)],
                   note="llama.cpp source: the llama-cpp-python sdist, again", timeout=1800)
            got = cache.file_sha256(sdist) if sdist.exists() else "missing"
        if sp.sha256 and got != sp.sha256:
            raise RuntimeError(f"{sdist}: sha256 {got} is not the pinned {sp.sha256}; delete the file and retry, "
                               "or set runtime.llama.source.sha256 if you changed the version on purpose")
        r.work(["rm", "-rf", str(dest)], note="clear a half-extracted tree")
        dest.mkdir(parents=True, exist_ok=True)
        r.work(["tar", "-xzf", str(sdist), "-C", str(dest), "--strip-components=3", "--wildcards",
                "*/vendor/llama.cpp/*"], note="extract vendor/llama.cpp")
        info = {**source_identity(sp), "file": sdist.name, "sha256_verified": got}
    else:
        r.work(["rm", "-rf", str(dest)], note="clear a half-cloned tree")
        res = r.work(["git", "clone", "--filter=blob:none", "--no-checkout", sp.url, str(dest)],
                     note="llama.cpp source from git", timeout=3600)
        r.work(["git", "-C", str(dest), "checkout", "--detach", str(sp.ref)])
        if res.planned:
            return dest
        head = gather(r, llama_facts.source_commit(dest))
        info = {**source_identity(sp), "commit": head}
    if not (dest / "CMakeLists.txt").exists():
        raise RuntimeError(f"{dest}: no CMakeLists.txt after fetching the source; delete {dest.parent} and retry")
    info.update(tree_version(dest))
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(marker)  # last, and whole: only a finished tree has it
    return dest


def tree_version(src: Path) -> dict:
    """llama.cpp / ggml versions as the tree's CMakeLists say (pure reading of files).

    The sdist's tree has no git metadata (its ``.git`` file points into the llama-cpp-python
    repository), so the binaries report ``commit unknown``; the sdist's sha256 pins the source.
    """
    out: dict = {}
    for name, prefix, key in (("CMakeLists.txt", "LLAMA", "llama_cpp_version"),
                              ("ggml/CMakeLists.txt", "GGML", "ggml_version")):
        p = src / name
        if p.exists():
            v = llama_facts.parse_cmake_version(p.read_text(errors="replace"), prefix)
            if v:
                out[key] = v
    if (src / ".git").is_file():
        out["llama_cpp_commit"] = "unknown (no git metadata in the sdist's vendored tree)"
    return out


def source_info(run) -> dict:
    """The recorded source identity (with verification results once fetched)."""
    dest = source_dir(run)
    marker = dest.parent / "complete.json"
    if marker.exists():
        return {**json.loads(marker.read_text()), **tree_version(dest)}
    return source_identity(run.params.runtime.llama.source)


# ---- build ----------------------------------------------------------------------------------
def compiler_version(run) -> str:
    """The first line of ``c++ --version``: what the build key hashes."""
    return gather(run.runner, toolchain.version_line("c++")) or "unknown"


def cmake_options_for(run, *, native: bool | None = None, extra: dict | None = None) -> dict:
    lp = run.params.runtime.llama
    native = lp.native if native is None else native
    opts = {"CMAKE_BUILD_TYPE": lp.build_type, "GGML_NATIVE": "ON" if native else "OFF", **BASE_OPTIONS}
    if not native and not lp.cmake_options and extra is None:
        opts.update(GENERIC_OPTIONS)
    opts.update({k: str(v) for k, v in lp.cmake_options.items()})
    opts.update({k: str(v) for k, v in (extra or {}).items()})
    return opts


def build_key(source: dict, options: dict, compiler: str, targets: list[str], patches: list[str] = ()) -> str:
    ident = {"source": {k: source.get(k) for k in ("provider", "version", "sha256", "url", "ref")},
             "options": options, "compiler": compiler, "targets": sorted(targets)}
    if patches:
        ident["patches"] = list(patches)
    return cache.key(ident)


def _march(build_dir: Path) -> str | None:
    """The -march flag of ggml-cpu's compile lines (compile_commands / ninja rules)."""
    for name in ("compile_commands.json", "build.ninja"):
        p = build_dir / name
        if p.exists():
            m = llama_facts.parse_march(p.read_text(errors="replace"))
            if m:
                return m
    return None


def patch_info(name: str) -> dict:
    """A pinned patch by name (``aios_lib/runtime/patches/llama.cpp/<name>.patch``) or by path: its file
    and sha256 (the sha256 goes into the key and the record)."""
    path = Path(name) if name.endswith(".patch") else PATCH_DIR / f"{name}.patch"
    name = path.stem
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PATCH_DIR.glob("*.patch"))) or "none"
        raise ValueError(f"no llama.cpp patch named {name!r} in {PATCH_DIR} (known: {known})")
    return {"name": name, "sha256": cache.file_sha256(path), "file": str(path)}


def build_targets(targets, options: dict | None = None) -> list[str]:
    """The targets asked for plus the verification's (order kept, no duplicates). llama.cpp's
    kernel tests link the CPU backend directly, which a GGML_BACKEND_DL build cannot."""
    out: list[str] = []
    verify = [] if (options or {}).get("GGML_BACKEND_DL") == "ON" else VERIFY_TARGETS
    for t in [*targets, *verify]:
        if t not in out:
            out.append(t)
    return out


def build(run, *, label: str = "native", native: bool | None = None, cmake_options: dict | None = None,
          targets: list[str] | None = None, patches: list[str] | None = None) -> LlamaBuild:
    """Build llama.cpp (or reuse the cached build with the same key).

    ``patches`` names pinned patches under ``aios_lib/runtime/patches/llama.cpp`` applied to this build's
    copy of the source. The result is not verified yet: :func:`aios_lib.runtime.verify.working_build`
    verifies it (and finds a build that works when it does not)."""
    lp = run.params.runtime.llama
    if native is None:
        native = lp.native if label == "native" else label != "generic" and lp.native
    options = cmake_options_for(run, native=native, extra=cmake_options)
    targets = build_targets(targets or lp.targets, options)
    compiler = compiler_version(run)
    src = fetch_source(run)
    source = source_info(run)
    names = list(patches or [])
    names += [OPTION_PATCHES[o][0] for o in OPTION_PATCHES if o in options and OPTION_PATCHES[o][0] not in names]
    pinfo = [patch_info(n) for n in names]
    for p in pinfo:
        p.setdefault("why", next((why for name, why in OPTION_PATCHES.values() if name == p["name"]), ""))
    key = build_key(source, options, compiler, targets, [p["sha256"] for p in pinfo])
    entry = cache.Entry("llama", f"{label}-{key}")
    with entry.lock(run.plan):  # two sessions never build one key at once
        return _build(run, label, native, options, compiler, source, src, key, entry, targets, pinfo)


def _prepare_tree(run, src: Path, tree: Path, pinfo: list[dict]) -> None:
    """``tree``: hard links to ``src`` with the patches applied (patch writes new files, so the
    shared source is never changed). A patch that does not apply is refused before anything changes."""
    r = run.runner
    r.work(["rm", "-rf", str(tree)], note="clear a half-prepared source tree")
    r.work(["cp", "-al", str(src), str(tree)], note="this build's source: hard links to the fetched tree")
    for p in pinfo:
        r.work(["patch", "-p1", "--dry-run", "-i", p["file"]], cwd=str(tree),
               note=f"does the pinned patch {p['name']} apply to this source?")
        r.work(["patch", "-p1", "-i", p["file"]], cwd=str(tree),
               note=f"apply the pinned patch {p['name']} (sha256 {p['sha256'][:16]})")


def _ccache_env(bdir: Path) -> dict:
    """ccache shared by every build, paths relative to the build folder so builds hit each other."""
    return {"CCACHE_DIR": str(cache_path("ccache")), "CCACHE_BASEDIR": str(bdir), "CCACHE_NOHASHDIR": "1",
            "CCACHE_MAXSIZE": "4G"}


def _build(run, label, native, options, compiler, source, src, key, entry, targets, pinfo) -> LlamaBuild:
    lp = run.params.runtime.llama
    r = run.runner
    dest = entry.path
    bin_dir = dest / "bin"
    if entry.complete() and all((bin_dir / t).exists() for t in targets):
        data = entry.info()
        data.setdefault("built_seconds", data.get("seconds"))
        data.update(bin_dir=bin_dir, cached=True, seconds=None, planned=False, source=source)
        return LlamaBuild(**{k: v for k, v in data.items() if k in LlamaBuild.__dataclass_fields__})

    same = _superset_build(options, compiler, source, targets, pinfo)
    if same is not None:  # a cached build of the same source and options already has these targets
        data = cache.Entry("llama", same.name).info()
        data.setdefault("built_seconds", data.get("seconds"))
        data.update(bin_dir=same / "bin", cached=True, seconds=None, planned=False, source=source, label=label)
        return LlamaBuild(**{k: v for k, v in data.items() if k in LlamaBuild.__dataclass_fields__})

    root = cache_path("llama-build", f"{label}-{key}")
    tree, bdir = root / "src", root / "build"
    env_unset = ["SOURCE_DATE_EPOCH"]
    env = _ccache_env(root)
    t0 = time.time()
    if not run.plan:
        if dest.exists() and not entry.complete() and (bdir / "CMakeCache.txt").exists():
            r.note(f"llama.cpp {label} build {key}: an interrupted build left {bdir} (no completion marker in "
                   f"{dest}); ninja continues it, redoing every step that did not finish")
        entry.discard_incomplete(r)  # a bin folder an interrupted run left half-copied
        root.mkdir(parents=True, exist_ok=True)
        dest.mkdir(parents=True, exist_ok=True)
    _prepare_tree(run, src, tree, pinfo)
    conf = r.work(["cmake", "-S", str(tree), "-B", str(bdir), "-G", "Ninja",
                   "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *[f"-D{k}={v}" for k, v in options.items()]],
                  unset_env=env_unset, env=env, note=f"configure llama.cpp ({label})")
    b = r.work(["cmake", "--build", str(bdir), "--config", lp.build_type, "-j", str(build_jobs(run, lp.jobs)),
                "--target", *targets], unset_env=env_unset, env=env, progress=build_progress,
               note=f"build {', '.join(targets)} ({label})", timeout=7200)
    result = LlamaBuild(bin_dir=bin_dir, label=label, source=source, cmake_options=options, compiler=compiler,
                        key=key, targets=targets, planned=conf.planned or b.planned,
                        patches=[{k: v for k, v in p.items() if k != "file"} for p in pinfo])
    if result.planned:
        r.work(["cp", "-a", f"{bdir}/bin/.", str(bin_dir)], note="cache the whole bin folder (launchers + .so)")
        return result
    seconds = time.time() - t0
    cmake_cache = llama_facts.parse_cmake_cache((bdir / "CMakeCache.txt").read_text(errors="replace"))
    result.native_in_effect = cmake_cache.get("GGML_NATIVE", "").upper() in ("ON", "1", "TRUE")
    if native and not result.native_in_effect:
        raise RuntimeError(f"{bdir}/CMakeCache.txt has GGML_NATIVE={cmake_cache.get('GGML_NATIVE')!r} although it was "
                           "asked for: is SOURCE_DATE_EPOCH set by the build environment?")
    result.march = _march(bdir)
    r.work(["rm", "-rf", str(bin_dir)])
    r.work(["cp", "-a", f"{bdir}/bin", str(bin_dir)], note="cache the whole bin folder (launchers + .so)")
    result.seconds = result.built_seconds = round(seconds, 1)
    result.version, result.features = binary_report(run, bin_dir, targets)
    entry.mark_complete({k: v for k, v in result.to_dict().items() if k not in ("bin_dir", "cached", "planned")})
    return result


def _superset_build(options: dict, compiler: str, source: dict, targets: list[str], pinfo: list[dict]) -> Path | None:
    """A cached build with identical source, patches, options and compiler whose targets include ``targets``."""
    want_patches = [p["sha256"] for p in pinfo]
    ident = ("provider", "version", "sha256", "url", "ref")
    for meta in sorted(cache_path("llama").glob(f"*/{cache.MARKER}")):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if (data.get("cmake_options") == options and data.get("compiler") == compiler
                and [p.get("sha256") for p in data.get("patches") or []] == want_patches
                and all(data.get("source", {}).get(k) == source.get(k) for k in ident)
                and set(targets) <= set(data.get("targets", []))
                and all((meta.parent / "bin" / t).exists() for t in targets)):
            return meta.parent
    return None


def binary_report(run, bin_dir: Path, targets: list[str]) -> tuple[str, list[str]]:
    """(version line, CPU features) as the built binaries report them.

    ``--version`` gives the version. The features come from the build's own libggml-cpu.so
    (:data:`aios_lib.facts.llama.FEATURES_PROBE`, works for a llama-bench-only build too); when that fails and
    llama-server was built, from the ``system_info`` line it prints before opening a model
    (a nonexistent model path: nothing is loaded).
    """
    r = run.runner
    exe = bin_dir / ("llama-bench" if "llama-bench" in targets else targets[0])
    version = gather(r, llama_facts.version(exe))
    feats = gather(r, llama_facts.features(bin_dir))
    if not feats and (bin_dir / "llama-server").exists():
        feats = gather(r, llama_facts.server_features(bin_dir / "llama-server"))
    return version, feats


def build_generic(run) -> LlamaBuild:
    """The generic x86-64 llama-bench (GGML_NATIVE=OFF, every optional x86 extension off) of the
    same source: what Phase 5 benchmarks against the native build. Same key as notebook 04's."""
    return build(run, label="generic", native=False, cmake_options=dict(GENERIC_OPTIONS), targets=["llama-bench"])


def build_release(run, targets: list[str] | None = None) -> LlamaBuild:
    """llama.cpp built the way its releases ship it for CPUs (:data:`RELEASE_OPTIONS`), same source,
    with llama-bench and llama-server (phase 05 measures both against Synapse's).

    With ``runtime.llama.stock_variants: chosen`` (the default, pinned source only) it has the CPU
    module ggml's loader picks on this CPU and the x86-64-v3 one, not every module a release ships
    (:mod:`aios_lib.runtime.cpu_variants`): the loader loads the same module, in a third of the time."""
    from . import cpu_variants

    options = dict(RELEASE_OPTIONS)
    scores: dict[str, int] = {}
    lp = run.params.runtime.llama
    if lp.stock_variants == "chosen" and lp.source.provider == "pypi-sdist":
        src = fetch_source(run)
        names, scores = cpu_variants.stock_variants(run, src, compiler_version(run), source_identity(lp.source))
        options["GGML_CPU_VARIANTS_ONLY"] = ";".join(names)
    b = build(run, label="release", native=False, cmake_options=options,
              targets=targets or ["llama-bench", "llama-server"])
    b.variant_scores = scores
    return b


def cpu_variants(build: LlamaBuild) -> list[str]:
    """The CPU backend modules of a GGML_BACKEND_DL build (``libggml-cpu-<name>.so``)."""
    return sorted(p.name[len("libggml-cpu-"):-3] for p in build.bin_dir.glob("libggml-cpu-*.so"))


def variant_dir(run, build: LlamaBuild, variant: str) -> Path:
    """A bin folder of ``build`` that holds one CPU backend module only, so ggml's loader (which
    scans the launcher's own folder and takes the best module the CPU supports) must load that
    one: e.g. ``haswell`` (AVX2, FMA, F16C, BMI2: the x86-64-v3 level) on a CPU that has more.
    The launchers are copied (the loader resolves /proc/self/exe, so a link would point back to
    the full folder); the libraries are links."""
    d = build.bin_dir.parent / "variants" / variant
    r = run.runner
    r.work(["rm", "-rf", str(d)], quiet=True, note=f"the {variant} module only")
    r.work(["mkdir", "-p", str(d)], quiet=True)
    files = sorted(build.bin_dir.iterdir()) if build.bin_dir.is_dir() else []
    for f in files:
        if f.name.startswith("libggml-cpu-") and f.name != f"libggml-cpu-{variant}.so":
            continue
        if f.name.startswith("llama-"):
            r.work(["cp", "-p", str(f), str(d / f.name)], quiet=True)
        else:
            r.work(["ln", "-s", str(f), str(d / f.name)], quiet=True)
    return d


def feature_table(*builds: LlamaBuild):
    """CPU features each build's binary reports, side by side (planned builds show as unknown)."""
    import pandas as pd

    builds = tuple(b for b in builds if b is not None)
    names: list[str] = []
    for b in builds:
        names += [f for f in b.features if f not in names]
    rows = [{"feature": f, **{b.label: (None if b.planned else f in b.features) for b in builds}} for f in names]
    return pd.DataFrame(rows, columns=["feature", *[b.label for b in builds]])
