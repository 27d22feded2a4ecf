"""A llama.cpp build is verified before anything uses it; when it fails, a build that works is found.

"Does this CPU have X" has three layers, and only the last one decides what Synapse runs:

1. advertised: the CPUID flags in /proc/cpuinfo (a hypervisor may present more than it backs);
2. enabled: what the kernel saves and restores (XCR0) and, for AMX, grants (:mod:`aios_lib.facts.xstate`);
3. usable by this build: the build's own binaries run on a real model here (this module).

:func:`verify` runs, each as a process of its own (a crash kills only that process):

* ``llama-bench`` on the real model, prompt and generation (``-p 32 -n 4``), with as many threads
  as there are logical CPUs so worker threads run the kernels too;
* one completion through ``llama-server`` (the binary the service runs), whose text must contain
  the expected answer when one is set;
* ``test-quantize-fns``: llama.cpp's own test of the CPU kernels this build compiled (quantize,
  dequantize and the vec_dot of every type, SIMD against the reference code). It does not reach
  the AMX or repack paths (those live in extra buffer types that only a model load uses), which is
  why the model runs come first.

A process killed by a signal is named (SIGILL, SIGSEGV, ...) and re-run under gdb, when installed,
for the faulting function and instruction; the instruction names the ISA extension.
:func:`working_build` then builds without that extension (``-mno-...`` on top of ``-march=native``,
or the ``GGML_*`` options off), or, for AMX, first with a pinned patch that repairs llama.cpp's AMX
path, and measures whether AMX helps here before keeping it. Every attempt is kept for the record.
"""
from __future__ import annotations

import json
import re
import shutil
import signal as _signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core import cache
from . import llama
from .cpus import all_cpus

#: the smoke run: small, but a prompt long enough for the batched (AMX / repack) kernels
SMOKE_PROMPT, SMOKE_GEN = 32, 4

#: what a gdb session prints about a crash: backtrace, the instruction at the program counter
GDB_COMMANDS = ["set pagination off", "set confirm off", "run", "bt 12", "x/i $pc", "info symbol $pc"]


# ---- signals -----------------------------------------------------------------------------------
def signal_of(rc: int | None) -> str | None:
    """The signal that ended a process: Popen reports -N, a shell 128+N. None for a normal exit."""
    if rc is None:
        return None
    n = -rc if rc < 0 else (rc - 128 if 128 < rc < 160 else None)
    if n is None:
        return None
    try:
        return _signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def describe_signal(name: str | None) -> str:
    words = {"SIGILL": "illegal instruction", "SIGSEGV": "invalid memory access", "SIGBUS": "bus error",
             "SIGABRT": "aborted (an assertion failed)", "SIGFPE": "arithmetic fault", "SIGKILL": "killed"}
    return f"{name} ({words[name]})" if name in words else str(name)


# ---- crash diagnosis (pure) ----------------------------------------------------------------------
def parse_gdb(text: str) -> dict[str, Any]:
    """A gdb batch session's report of a crash: signal, frames, faulting function, library, instruction."""
    out: dict[str, Any] = {"signal": None, "frames": [], "function": None, "library": None, "instruction": None}
    for line in text.splitlines():
        m = re.search(r"received signal (SIG[A-Z0-9]+)", line)
        if m and not out["signal"]:
            out["signal"] = m.group(1)
        if re.match(r"^#\d+\s", line):
            out["frames"].append(line.strip())
        m = re.match(r"^=>\s*0x[0-9a-f]+(?:\s*<[^>]*>)?:\s*(.+)$", line.strip())
        if m:
            out["instruction"] = m.group(1).strip()
    if out["frames"]:
        f0 = re.sub(r"^#0\s+(?:0x[0-9a-f]+\s+in\s+)?", "", out["frames"][0])
        m = re.search(r"\s+(?:from|at)\s+(\S+)$", f0)
        if m:
            out["library"] = Path(m.group(1)).name
            f0 = f0[:m.start()]
        out["function"] = _short_function(re.sub(r"\s*\(\)$", "", f0.strip()))
    return out


def _short_function(fn: str) -> str:
    """``void (anonymous namespace)::f<A, B>(int, ...) [clone .constprop.0] ()`` -> ``f<A, B>``."""
    fn = re.sub(r"\s*\[clone [^\]]*\]", "", fn)
    fn = re.sub(r"^(?:void|int|float|bool|static)\s+", "", fn)
    fn = fn.replace("(anonymous namespace)::", "")
    # drop the argument list: the last top-level "(...)"
    depth, cut = 0, None
    for i, ch in enumerate(fn):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    return (fn[:cut] if cut else fn).strip()


_AVX512_REG = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(?:1[6-9]|2\d|3[01])\b")


def extension_of(instruction: str | None, function: str | None = None) -> tuple[str | None, str]:
    """The ISA extension a faulting instruction belongs to (AT&T syntax, as gdb prints it), or,
    without one, what the function name says. Returns (extension, how it was identified)."""
    if instruction:
        ins = instruction.strip()
        ins = re.sub(r"^\{(?:vex|evex)\}\s*", "", ins)
        mnem, _, ops = ins.partition(" ")
        m, ops = mnem.lower(), ops.lower()
        how = f"the faulting instruction `{instruction.strip()}`"
        if "%tmm" in ops or m.startswith(("tile", "tdp")) or m in ("ldtilecfg", "sttilecfg"):
            return "AMX", how
        if m in ("vdpbf16ps", "vcvtne2ps2bf16", "vcvtneps2bf16") and (_AVX512_REG.search(ops) or "zmm" in ops):
            return "AVX512-BF16", how
        if re.match(r"^v(?:add|sub|mul|div|max|min|sqrt|rcp|rsqrt|scalef|reduce|fc?madd|fc?mul)\w*(?:ph|sh)$", m) \
                or re.match(r"^vf(?:n)?m(?:add|sub)(?:sub|add)?(?:132|213|231)(?:ph|sh)$", m):
            return "AVX512-FP16", how
        if _AVX512_REG.search(ops) or re.match(r"^k(?:mov|and|or|xor|not|shift|test|add|unpck|ortest)", m):
            return "AVX-512", how
        if m in ("vpdpbusd", "vpdpbusds", "vpdpwssd", "vpdpwssds"):
            return "AVX-VNNI", how
        if re.match(r"^vf(?:n)?m(?:add|sub)(?:sub|add)?(?:132|213|231)", m):
            return "FMA", how
        if re.match(r"^vf(?:n)?m(?:add|sub)(?:sub|add)?(?:ps|pd|ss|sd)$", m):
            return "FMA4", how
        if m in ("vcvtph2ps", "vcvtps2ph"):
            return "F16C", how
        if "%ymm" in ops:
            return "AVX2", how
    if function:
        f = function.lower()
        for word, ext in (("amx", "AMX"), ("avx512", "AVX-512"), ("avx2", "AVX2")):
            if word in f:
                return ext, f"the function name `{function}`"
    return None, "not identified"


#: how to build without an extension: gcc flags on top of -march=native (explicit -mno-... wins
#: over what -march=native enables, in either order) and the GGML_* options for non-native builds
WITHOUT = {
    "AMX": {"flags": ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"],
            "ggml": ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]},
    "AVX512-FP16": {"flags": ["-mno-avx512fp16"], "ggml": []},
    "AVX512-BF16": {"flags": ["-mno-avx512bf16"], "ggml": ["GGML_AVX512_BF16"]},
    # every AVX-512 subset depends on AVX512F; ggml's AMX code also needs AVX512-VNNI
    "AVX-512": {"flags": ["-mno-avx512f"],
                "ggml": ["GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16",
                         "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]},
    "AVX-VNNI": {"flags": ["-mno-avxvnni"], "ggml": ["GGML_AVX_VNNI"]},
    "FMA4": {"flags": ["-mno-fma4"], "ggml": []},
    "FMA": {"flags": ["-mno-fma"], "ggml": ["GGML_FMA"]},
    "F16C": {"flags": ["-mno-f16c"], "ggml": ["GGML_F16C"]},
    "AVX2": {"flags": ["-mno-avx2"], "ggml": ["GGML_AVX2"]},
}

#: pinned patches that repair an extension's code path in the pinned source (tried first)
REPAIRS = {
    "AMX": {"patch": "amx-tile-config",
            "why": "llama.cpp's AMX kernel builds its tile configuration on the stack, where the compiler "
                   "drops the stores as dead: ldtilecfg loads an invalid configuration and the next tile "
                   "instruction faults. The patch puts the configuration in .rodata and requests the "
                   "tile-data permission in every thread (after ggml-org/llama.cpp pull request #26954, "
                   "open when this was written)."},
}

#: the build's features (ggml_backend_get_features) that show an extension was compiled in,
#: newest first: the order a diagnosis-free search switches them off
FEATURE_OF = [("AMX", "AMX_INT8"), ("AVX512-BF16", "AVX512_BF16"), ("AVX-512", "AVX512"),
              ("AVX-VNNI", "AVX_VNNI"), ("FMA", "FMA"), ("F16C", "F16C"), ("AVX2", "AVX2")]


def without_options(options: dict, extensions: list[str], *, scoped: bool = False) -> dict:
    """CMake options for the same build without ``extensions`` (flags appended, GGML_* off).

    ``scoped`` (the pinned source, whose patch ``cpu-extra-flags`` adds GGML_CPU_EXTRA_FLAGS): in a
    native build whose options set no global compiler flags, the flags go to ggml's CPU backend only,
    the one library compiled with -march, so ccache serves every other file from the build it was made
    like. A build with global flags (one forcing an extension everywhere) gets them globally."""
    extra: dict[str, str] = {}
    flags = [f for e in extensions for f in WITHOUT[e]["flags"]]
    global_flags = options.get("CMAKE_C_FLAGS") or options.get("CMAKE_CXX_FLAGS")
    if scoped and options.get("GGML_NATIVE") == "ON" and not global_flags:
        have = [f for f in options.get("GGML_CPU_EXTRA_FLAGS", "").split(";") if f]
        extra["GGML_CPU_EXTRA_FLAGS"] = ";".join(dict.fromkeys([*have, *flags]))
        return extra
    for var in ("CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS"):
        base = options.get(var, "")
        extra[var] = " ".join(x for x in (base, *flags) if x)
    if options.get("GGML_NATIVE") != "ON":
        for e in extensions:
            for opt in WITHOUT[e]["ggml"]:
                extra[opt] = "OFF"
    return extra


# ---- the record of a verification ----------------------------------------------------------------
@dataclass
class Check:
    """One verification step: a process of its own."""

    name: str
    command: str
    ok: bool | None  # None: planned or skipped
    rc: int | None = None
    signal: str | None = None
    seconds: float = 0.0
    detail: str = ""
    skipped: str | None = None


@dataclass
class Crash:
    """Why a check died: from gdb when installed."""

    signal: str | None
    function: str | None = None
    library: str | None = None
    instruction: str | None = None
    extension: str | None = None
    identified_by: str = "not identified"
    frames: list[str] = field(default_factory=list)
    gdb: str = ""  # the command that produced it

    def sentence(self) -> str:
        where = f" in `{self.function}`" if self.function else ""
        lib = f" ({self.library})" if self.library else ""
        ext = f"; extension: {self.extension}, from {self.identified_by}" if self.extension else \
            f"; extension not identified ({self.identified_by})"
        return f"{describe_signal(self.signal)}{where}{lib}{ext}"


@dataclass
class Verification:
    label: str
    key: str
    model: str
    checks: list[Check] = field(default_factory=list)
    crash: Crash | None = None
    planned: bool = False

    @property
    def ok(self) -> bool:
        ran = [c for c in self.checks if c.skipped is None]
        return bool(ran) and all(c.ok for c in ran)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.skipped is None and c.ok is False]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = None if self.planned else self.ok
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Verification":
        crash = Crash(**d["crash"]) if d.get("crash") else None
        return cls(label=d["label"], key=d["key"], model=d["model"], checks=[Check(**c) for c in d.get("checks", [])],
                   crash=crash, planned=d.get("planned", False))

    def table(self):
        import pandas as pd

        rows = [{"check": c.name, "result": ("planned" if self.planned else "skipped" if c.skipped else
                                             "ok" if c.ok else "FAILED"),
                 "signal": describe_signal(c.signal) if c.signal else "", "seconds": round(c.seconds, 1),
                 "detail": c.skipped or c.detail} for c in self.checks]
        return pd.DataFrame(rows, columns=["check", "result", "signal", "seconds", "detail"])

    def _repr_markdown_(self) -> str:
        from ..core.markdown import md_table

        state = "planned" if self.planned else ("**verified**" if self.ok else "**FAILED verification**")
        parts = [f"llama.cpp `{self.label}` build (key `{self.key}`): {state} on `{Path(self.model).name}`", "",
                 md_table(self.table())]
        if self.crash:
            parts += ["", f"Crash: {self.crash.sentence()}"]
            if self.crash.frames:
                parts += ["", "```", *self.crash.frames[:6], "```"]
        return "\n".join(parts)


# ---- the checks ----------------------------------------------------------------------------------
def _threads(run) -> int:
    """Every installed CPU (``nproc --all``), so worker threads run the kernels too."""
    return all_cpus(run)


def cpu_variant(stderr: str) -> str | None:
    """Which CPU backend module a GGML_BACKEND_DL build loaded (``libggml-cpu-<variant>.so``)."""
    m = re.search(r"loaded CPU backend from \S*libggml-cpu-([\w-]+)\.so", stderr or "")
    return m.group(1) if m else None


def check_bench(run, build, model_path: str, threads: int, extra: tuple[str, ...] = (),
                name: str = "llama-bench (prompt + generation)") -> tuple[Check, list[str]]:
    argv = [str(build.binary("llama-bench")), "-m", str(model_path), "-p", str(SMOKE_PROMPT), "-n", str(SMOKE_GEN),
            "-r", "1", "-t", str(threads), *extra, "-o", "json"]
    res = run.runner.work(argv, check=False, quiet=True, timeout=900,
                          note=f"verify the {build.label} build: llama-bench on the real model")
    c = Check(name, res.cmdline, None, res.rc, signal_of(res.rc), round(res.duration, 2))
    if res.planned:
        return c, argv
    variant = cpu_variant(res.stderr)
    via = f" (CPU backend module: {variant})" if variant else ""
    if res.rc != 0:
        c.ok = False
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] if not c.signal else []
        c.detail = (f"died: {describe_signal(c.signal)}" if c.signal else f"exited {res.rc}: {' '.join(tail)}") + via
        return c, argv
    try:
        rows = json.loads(res.stdout)
        tps = {("pp" if r["n_prompt"] else "tg"): float(r["avg_ts"]) for r in rows}
    except (ValueError, KeyError, TypeError):
        c.ok, c.detail = False, "exited 0 but printed no benchmark JSON"
        return c, argv
    c.ok = "pp" in tps and "tg" in tps and all(v > 0 for v in tps.values())
    c.detail = ", ".join(f"{k}{SMOKE_PROMPT if k == 'pp' else SMOKE_GEN} {v:.1f} t/s" for k, v in tps.items()) + via
    return c, argv


def check_server(run, build, model_path: str, threads: int, prompt: str, expect: str | None) -> Check:
    from ..measure.server import LlamaServer

    srv = LlamaServer(run, build.binary("llama-server"), model_path, threads=threads, ctx=512)
    c = Check("llama-server (one completion)", " ".join(srv.argv), None)
    try:
        srv.start()
    except (RuntimeError, TimeoutError) as e:
        res = srv.proc.result if srv.proc is not None else None
        c.ok, c.rc = False, res.rc if res else None
        c.signal = signal_of(c.rc)
        c.detail = f"died before it was ready: {describe_signal(c.signal)}" if c.signal else str(e).splitlines()[0]
        return c
    if srv.planned:
        return c
    try:
        s = srv.stream(prompt, n_predict=12, seed=0, temperature=0.0)
        text = s.text
    except Exception as e:  # the server died mid-request
        text = None
        err = str(e).splitlines()[0]
    res = srv.stop()
    c.rc, c.seconds = res.rc, round(res.duration, 2)
    died = srv.proc.result is not None and signal_of(res.rc) not in (None, "SIGTERM")
    if text is None or died:
        c.ok, c.signal = False, signal_of(res.rc)
        c.detail = f"died during the request: {describe_signal(c.signal)}" if c.signal else f"request failed: {err}"
        return c
    c.ok = bool(text.strip()) and (expect is None or expect.lower() in text.lower())
    c.detail = f"{prompt!r} -> {text.strip()!r}" + ("" if c.ok else
                                                  f" (expected {expect!r})" if expect else " (empty)")
    return c


def check_kernels(run, build) -> Check:
    exe = build.binary("test-quantize-fns")
    if not run.plan and not exe.exists():
        return Check("test-quantize-fns (CPU kernels vs reference)", str(exe), None,
                     skipped="not built (a build from before verification existed): rebuild to run it")
    res = run.runner.work([str(exe)], check=False, quiet=True, timeout=900,
                          note=f"verify the {build.label} build: llama.cpp's test of its CPU kernels")
    c = Check("test-quantize-fns (CPU kernels vs reference)", res.cmdline, None, res.rc, signal_of(res.rc),
              round(res.duration, 2))
    if res.planned:
        return c
    out = (res.stdout or "") + (res.stderr or "")
    types = len(re.findall(r"^Testing ", out, re.M))
    failed = [ln.strip() for ln in out.splitlines() if "FAILED" in ln]
    c.ok = res.rc == 0 and types > 0
    c.detail = (f"{types} types: quantize, dequantize and vec_dot within tolerance" if c.ok else
                f"died: {describe_signal(c.signal)}" if c.signal else
                "; ".join(failed[:4]) or f"exited {res.rc}")
    return c


def diagnose(run, argv: list[str], sig: str | None) -> Crash:
    """Re-run a crashed command under gdb (when installed): faulting function and instruction."""
    if not shutil.which("gdb"):
        return Crash(sig, identified_by="gdb is not installed (apt-get install gdb)")
    cmd = ["gdb", "-batch", "-nx", "-q"]
    for c in GDB_COMMANDS:
        cmd += ["-ex", c]
    cmd += ["--args", *argv]
    res = run.runner.work(cmd, check=False, quiet=True, timeout=600, note="why did it crash: gdb backtrace")
    if res.planned:
        return Crash(sig, gdb=res.cmdline)
    g = parse_gdb((res.stdout or "") + (res.stderr or ""))
    ext, how = extension_of(g["instruction"], g["function"])
    return Crash(g["signal"] or sig, g["function"], g["library"], g["instruction"], ext, how, g["frames"],
                 res.cmdline)


def verify(run, build, model_path, *, prompt: str | None = None, expect: str | None = None) -> Verification:
    """Run the build's binaries on the real model, each in a process of its own; name any crash."""
    vp = run.params.runtime.llama.verify
    prompt = prompt or vp.prompt
    expect = expect if expect is not None else vp.expect
    v = Verification(build.label, build.key, str(model_path), planned=bool(build.planned or run.plan))
    threads = _threads(run)
    bench_argv = None
    if "llama-bench" in build.targets:
        c, bench_argv = check_bench(run, build, model_path, threads)
        v.checks.append(c)
    if "llama-server" in build.targets:
        v.checks.append(check_server(run, build, model_path, threads, prompt, expect))
    else:
        v.checks.append(Check("llama-server (one completion)", "", None, skipped="not built in this build"))
    if "test-quantize-fns" in build.targets:
        v.checks.append(check_kernels(run, build))
    else:
        v.checks.append(Check("test-quantize-fns (CPU kernels vs reference)", "", None,
                              skipped="cannot be built with GGML_BACKEND_DL (it links the CPU backend directly): "
                                      "the model runs verify this build"))
    dead = next((c for c in v.checks if c.signal and c.ok is False), None)
    if dead is not None and not v.planned:
        if bench_argv is not None and v.checks[0].signal:
            v.crash = diagnose(run, bench_argv, dead.signal)
        else:  # a server under gdb would wait for requests: nothing to replay without a hang
            v.crash = Crash(dead.signal, identified_by=f"{dead.name} died but llama-bench did not, so there "
                                                       "is no command to replay under gdb")
    return v


# ---- finding a build that works --------------------------------------------------------------------
class NoWorkingBuild(RuntimeError):
    """No build of this source runs on this machine (every attempt is in the message)."""


@dataclass
class Attempt:
    build: dict
    verification: dict
    why: str


@dataclass
class WorkingBuild:
    """The build Synapse uses, the verification it passed, and every build tried on the way."""

    build: Any  # llama.LlamaBuild
    verification: Verification
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""
    amx: dict | None = None  # AMX build vs build without AMX, when both ran

    @property
    def planned(self) -> bool:
        return self.verification.planned

    def to_dict(self) -> dict:
        return {"build": self.build.to_dict(), "verification": self.verification.to_dict(),
                "attempts": [asdict(a) for a in self.attempts], "reason": self.reason, "amx": self.amx}

    def attempts_table(self):
        import pandas as pd

        rows = []
        for a in self.attempts:
            v = Verification.from_dict(a.verification)
            b = a.build
            crash = v.crash.sentence() if v.crash else ""
            flags = b["cmake_options"].get("CMAKE_CXX_FLAGS", "")
            rows.append({"build": b["label"], "why tried": a.why,
                         "patches": ", ".join(p["name"] for p in b.get("patches", [])),
                         "extra flags": flags, "result": "planned" if v.planned else "verified" if v.ok else "FAILED",
                         "crash": crash})
        return pd.DataFrame(rows)

    def _repr_markdown_(self) -> str:
        from ..core.markdown import md_table

        if self.planned:
            return f"**planned**: build, then verify `{self.build.label}` before anything uses it"
        head = (f"**Using the `{self.build.label}` build** (`{self.build.bin_dir}`), verified on this machine."
                if self.verification.ok else "**No working build**")
        parts = [head, "", self.reason, "", md_table(self.attempts_table())]
        if self.amx:
            parts += ["", f"AMX on this machine: {self.amx.get('decision', '')}"]
        return "\n".join(parts)


def _scoped(run) -> bool:
    """Whether the source is the pinned one that the option patches (llama.OPTION_PATCHES) apply to."""
    return run.params.runtime.llama.source.provider == "pypi-sdist"


def _features_on(build) -> list[str]:
    return [ext for ext, feat in FEATURE_OF if feat in (build.features or [])]


def working_build(run, model_path, *, label: str = "native", native: bool | None = None,
                  cmake_options: dict | None = None, targets: list[str] | None = None,
                  patches: list[str] | None = None) -> WorkingBuild:
    """Build, verify, and when verification fails find a build of the same source that works.

    Order of repairs for a crash whose extension is known: the pinned patch for that extension
    (AMX), then the same build without the extension. Without a diagnosis the compiled-in
    extensions are switched off one by one, newest first (each step a build, cached)."""
    lp = run.params.runtime.llama
    patches = list(patches or [])
    b = llama.build(run, label=label, native=native, cmake_options=cmake_options, targets=targets, patches=patches)
    v = verify(run, b, model_path)
    attempts = [Attempt(b.to_dict(), v.to_dict(), "the build as configured")]
    if v.planned or v.ok:
        why = "verified as configured" if v.ok else "planned: verified when built"
        return WorkingBuild(b, v, attempts, why)
    first = v
    if not lp.find_working_build:
        raise NoWorkingBuild(f"the {label} llama.cpp build failed verification ({_why(v)}) and "
                             "runtime.llama.find_working_build is false: set it true to let Synapse find a build "
                             "that works, or change runtime.llama.cmake_options")
    base = b.cmake_options
    off: list[str] = []
    queue = [v.crash.extension] if v.crash and v.crash.extension in WITHOUT else \
        [e for e in _features_on(b) if e in WITHOUT]
    how = "from the crash diagnosis" if v.crash and v.crash.extension else \
        "by switching compiled-in extensions off one by one (no diagnosis)"
    tried = 0
    while queue and tried < lp.max_fallback_builds:
        ext = queue.pop(0)
        repair = REPAIRS.get(ext)
        if repair and lp.source.provider == "pypi-sdist":
            tried += 1
            pb = llama.build(run, label=f"{label}-{repair['patch']}", native=native, cmake_options=cmake_options,
                             targets=targets, patches=[*patches, repair["patch"]])
            for p in pb.patches:
                if p["name"] == repair["patch"]:
                    p["why"] = repair["why"]
            pv = verify(run, pb, model_path)
            attempts.append(Attempt(pb.to_dict(), pv.to_dict(), f"{ext}: the pinned patch {repair['patch']}"))
            if pv.ok:
                return _keep_or_drop_extension(run, model_path, ext, pb, pv, attempts, first, label, native,
                                               cmake_options, targets, base, patches)
        off.append(ext)
        tried += 1
        extra = {**(cmake_options or {}), **without_options(base, off, scoped=_scoped(run))}
        nb = llama.build(run, label=f"{label}-no-{'-'.join(e.lower() for e in off)}", native=native,
                         cmake_options=extra, targets=targets, patches=patches)
        nv = verify(run, nb, model_path)
        attempts.append(Attempt(nb.to_dict(), nv.to_dict(), f"without {', '.join(off)} ({how})"))
        if nv.ok:
            reason = (f"The `{label}` build failed verification: {_why(first)}. The same build without "
                      f"{', '.join(off)} passes; the extension was identified {how}.")
            return WorkingBuild(nb, nv, attempts, reason)
        nxt = nv.crash.extension if nv.crash else None
        if nxt in WITHOUT and nxt not in off and nxt not in queue:
            queue.insert(0, nxt)
    lines = "; ".join(f"{a.build['label']}: {_why(Verification.from_dict(a.verification))}" for a in attempts)
    raise NoWorkingBuild(f"no llama.cpp build of this source passed verification on this machine ({lines}). "
                         "Report the crash above upstream, or pin another source version in runtime.llama.source")


def generic_build(run, model_path) -> WorkingBuild:
    """The generic x86-64 llama-bench of the same source (every optional x86 extension off), verified."""
    return working_build(run, model_path, label="generic", native=False, cmake_options=dict(llama.GENERIC_OPTIONS),
                         targets=["llama-bench"])


def _why(v: Verification) -> str:
    if v.crash:
        return v.crash.sentence()
    bad = v.failed()
    return "; ".join(f"{c.name}: {c.detail}" for c in bad) or "no check ran"


def _keep_or_drop_extension(run, model_path, ext, pb, pv, attempts, first, label, native, cmake_options, targets,
                            base, patches) -> WorkingBuild:
    """The patch made ``ext`` work: measure the patched build against one without ``ext``
    (interleaved rounds, paired ratios) and keep the extension only where it helps."""
    nb = llama.build(run, label=f"{label}-no-{ext.lower()}", native=native,
                     cmake_options={**(cmake_options or {}), **without_options(base, [ext], scoped=_scoped(run))},
                     targets=["llama-bench"], patches=patches)
    nv = verify(run, nb, model_path)
    attempts.append(Attempt(nb.to_dict(), nv.to_dict(), f"without {ext}, to measure what {ext} buys here"))
    if not nv.ok:
        reason = (f"The `{label}` build failed verification: {_why(first)}. With the pinned patch it passes; "
                  f"the build without {ext} failed too, so the patched build is used.")
        return WorkingBuild(pb, pv, attempts, reason, {"decision": f"keep {ext}: the build without it failed"})
    m = measure_extension(run, pb, nb, model_path, ext)
    if m["keep"]:
        reason = (f"The `{label}` build failed verification: {_why(first)}. With the pinned patch "
                  f"`{REPAIRS[ext]['patch']}` it passes, and {ext} helps here ({m['decision']}): the patched "
                  "build is used.")
        return WorkingBuild(pb, pv, attempts, reason, m)
    full = llama.build(run, label=f"{label}-no-{ext.lower()}", native=native,
                       cmake_options={**(cmake_options or {}), **without_options(base, [ext], scoped=_scoped(run))},
                       targets=targets, patches=patches)
    fv = verify(run, full, model_path)
    attempts.append(Attempt(full.to_dict(), fv.to_dict(), f"without {ext}, all targets (the patch did not pay)"))
    reason = (f"The `{label}` build failed verification: {_why(first)}. The pinned patch makes {ext} work, but "
              f"{ext} does not help here ({m['decision']}): the build without {ext} is used.")
    if not fv.ok:
        return WorkingBuild(pb, pv, attempts, reason + " It failed verification with all targets, so the "
                            "patched build is used after all.", m)
    return WorkingBuild(full, fv, attempts, reason, m)


def measure_extension(run, with_ext, without_ext, model_path, ext: str) -> dict:
    """``with_ext`` against ``without_ext``: llama-bench in interleaved rounds (order alternating),
    one sample per invocation, paired ratios with 95% CIs for prompt processing and generation.

    The decision is kept in the cache under the two builds, the model and the measurement's sizes,
    and reused with its date and run: measured again on a busy machine it can flip (and with it which
    build every later step uses). Remove ``<cache>/llama-decisions`` to measure it again."""
    vp = run.params.runtime.llama.verify
    mp = Path(str(model_path))
    ident = {"with": with_ext.key, "without": without_ext.key, "extension": ext, "threads": _threads(run),
             "model": mp.name, "model_bytes": mp.stat().st_size if mp.exists() else None,
             "sizes": [vp.measure_prompt, vp.measure_gen, vp.measure_rounds]}
    entry = cache.Entry("llama-decisions", cache.key(ident))
    if not run.plan and entry.complete():
        out = entry.info()
        was = out.get("measured") or {}
        run.runner.note(f"{ext}: the keep-or-drop decision measured in run {was.get('run_id')} at {was.get('at')} "
                        f"is reused ({out.get('decision')}); remove {entry.path} to measure it again")
        out["reused_from"] = was
        return out
    out = _measure_extension(run, with_ext, without_ext, model_path, ext)
    if not out.get("planned"):
        out["measured"] = {"run_id": run.dir.name, "at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        entry.path.mkdir(parents=True, exist_ok=True)
        entry.mark_complete(out)
    return out


def _measure_extension(run, with_ext, without_ext, model_path, ext: str) -> dict:
    from ..measure import experiment, llama_bench

    vp = run.params.runtime.llama.verify
    threads = _threads(run)
    confs = [llama_bench.BenchConfig(f"without {ext}", str(without_ext.binary("llama-bench")), str(model_path), threads,
                               prompt=[vp.measure_prompt], gen=[vp.measure_gen], reps=2),
             llama_bench.BenchConfig(f"with {ext}", str(with_ext.binary("llama-bench")), str(model_path), threads,
                               prompt=[vp.measure_prompt], gen=[vp.measure_gen], reps=2)]
    ex = experiment.experiment(run, f"{ext.lower()}_ab", f"{ext} build vs build without {ext} (t={threads})", confs,
                          vp.measure_rounds, baseline=f"without {ext}")
    out: dict[str, Any] = {"extension": ext, "experiment": ex.to_dict(), "planned": ex.planned}
    if ex.planned:
        out.update(keep=True, decision="planned")
        return out
    ratios = {t: ex.paired(f"without {ext}", f"with {ext}", t) for t in ex.tests()}
    out["ratios"] = {t: r.as_dict() for t, r in ratios.items()}
    helps = [t for t, r in ratios.items() if r.verdict == "higher"]
    hurts = [t for t, r in ratios.items() if r.verdict == "lower"]
    out["keep"] = bool(helps) and not hurts
    out["decision"] = "; ".join(f"{t}: {r.describe()}" for t, r in ratios.items())
    return out


# ---- the stock build: a finding, not a failure of the run ----------------------------------------
def _variant_of(v: Verification) -> str | None:
    m = re.search(r"CPU backend module: ([\w-]+)", " ".join(c.detail for c in v.checks))
    return m.group(1) if m else None


def modules_note(build, loaded: str | None) -> str:
    """Which CPU modules the stock build has and why, and whether the loader took the predicted one."""
    from . import cpu_variants

    scores = getattr(build, "variant_scores", None) or {}
    built = llama.cpu_variants(build) if build.bin_dir.is_dir() else []
    if not scores:
        return f"CPU modules built: {', '.join(built) or 'none yet (planned)'}."
    top = cpu_variants.best(scores)
    zero = sorted(k for k, s in scores.items() if s <= 0)
    text = (f"CPU modules built: {', '.join(built)}; ggml's own score function, compiled for each of the "
            f"{len(scores)} variants a release ships and run on this CPU, ranks `{top}` first "
            f"(score {scores.get(top)}); {len(zero)} variants cannot run here. A release's other modules "
            "would never be loaded here, so they are not built (runtime.llama.stock_variants: all builds them).")
    if loaded and loaded != top:
        text += f" The loader took `{loaded}`, not the predicted `{top}`: stock here is what the loader chose."
    return text


def stock_finding(run, build, model_path) -> dict:
    """Verify llama.cpp as its releases ship it. When it crashes here that is the comparison's first
    result, recorded as such; the runtime workaround ``--repack 0`` (no extra buffer types: neither
    AMX nor the repacked kernels) is tried and recorded as a workaround, never applied silently."""
    v = verify(run, build, model_path)
    out: dict[str, Any] = {"build": build.to_dict(), "verification": v.to_dict(), "runs": None if v.planned else v.ok,
                           "workaround": None, "variant": _variant_of(v), "modules": modules_note(build, _variant_of(v))}
    if v.planned:
        out["finding"] = "planned"
        return out
    if v.ok:
        out["finding"] = (f"llama.cpp built as its releases ship it runs on this machine "
                          f"({v.checks[0].detail}).")
        return out
    c, _ = check_bench(run, build, model_path, _threads(run), ("--repack", "0"),
                       name="llama-bench --repack 0 (runtime workaround)")
    out["workaround"] = asdict(c)
    crash = v.crash.sentence() if v.crash else _why(v)
    out["finding"] = (f"llama.cpp built as its releases ship it does not run on this machine: {crash}. "
                      + (f"With the runtime workaround `--repack 0` it runs ({c.detail}); what the workaround "
                         "costs is measured where it is used." if c.ok else
                         f"The runtime workaround `--repack 0` does not help either ({c.detail})."))
    return out
