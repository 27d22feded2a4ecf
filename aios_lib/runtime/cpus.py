"""How many threads llama.cpp runs with, on which CPUs, and how many jobs a build uses: decided here
and nowhere else.

:func:`cpu_plan` holds every rule in one table (:data:`RULES`), in order of precedence: the first
rule of the purpose that gives a thread count wins, and its words become ``source`` (the words the
records have always used). The CPU count every rule starts from is read one way: the
``nproc`` fact (:data:`aios_lib.facts.cpu.USABLE_CPUS`, the CPUs this process may run on).

* ``bench`` (phase 05): the sweep's best count, else llama-bench's own default ``-t``, else the
  usable CPUs. The benchmark does not pin CPUs.
* ``service`` (phase 06, the image): the parameters, else phase 05's choice, else phase 01's
  physical cores, else the parameters' CPU list or the usable CPUs; ``CPUAffinity=`` is
  ``service.cpus``, else 05's CPUs, else the first ``threads`` CPUs.

The two purposes keep different fallbacks (llama-bench's default against the survey's physical
cores) because that is what each phase has always done; converging them is a visible change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Literal

from ..core.records import find_value
from ..facts import cpu as cpu_facts, gather
from ..facts.llama import default_threads

Purpose = Literal["bench", "service"]


@dataclass(frozen=True)
class CpuPlan:
    purpose: str
    threads: int  # the -t of llama-bench / llama-server (and OLLAMA_NUM_THREADS)
    cpus: list[int]  # CPUAffinity= of the service; [] for the benchmark (it does not pin)
    source: str  # which rule gave ``threads``
    usable_cpus: int  # the one CPU count (nproc)
    sweep: list[int] = field(default_factory=list)  # thread counts the sweep measures
    bench_default: int | None = None  # llama-bench's own default -t (from its --help)

    def placement(self) -> dict:
        """What phase 06 records as ``placement`` (and the image manifest): threads, cpus, source."""
        return {"threads": self.threads, "cpus": list(self.cpus), "source": self.source}

    def _repr_markdown_(self) -> str:
        if self.purpose == "service":
            return f"`-t {self.threads}`, `CPUAffinity={' '.join(map(str, self.cpus))}` (from {self.source})"
        return f"`-t {self.threads}` (from {self.source}); usable CPUs {self.usable_cpus}"


@dataclass(frozen=True)
class Known:
    """Everything a rule may use, read before any rule runs."""

    usable_cpus: int
    measured: int | None = None  # the sweep's best thread count
    bench_default: int | None = None
    service_threads: int | None = None  # service.threads unless "auto"
    service_cpus: list[int] | None = None  # service.cpus unless "auto"
    chosen: dict = field(default_factory=dict)  # results.json 05/chosen
    survey_cores: int | None = None  # physical cores in results.json 01/survey


def _service(k: Known, recorded: int | None) -> int | None:
    """service.threads wins over a recorded count; None when there is neither."""
    if not recorded:
        return None
    return k.service_threads if k.service_threads is not None else int(recorded)


MEASURED = "measured: highest mean tg in this run's thread sweep"
CHOSEN = "phase 05 benchmark (results.json 05/chosen)"

#: (purpose, source, the thread count the rule gives or None to try the next), in precedence order
RULES: list[tuple[str, str, Callable[[Known], int | None]]] = [
    ("bench", MEASURED, lambda k: k.measured or None),
    ("bench", "llama-bench's default -t (its --help)", lambda k: k.bench_default or None),
    ("bench", "usable CPUs (nproc)", lambda k: k.usable_cpus),
    ("service", "parameters (service.threads, service.cpus)",
     lambda k: k.service_threads if k.service_threads is not None and k.service_cpus is not None else None),
    ("service", CHOSEN, lambda k: _service(k, k.chosen.get("threads"))),
    ("service", "phase 01 survey: physical cores (no phase 05 choice recorded)",
     lambda k: _service(k, k.survey_cores)),
    ("service", "parameters / this host's CPU count (no phase 05 or 01 record)",
     lambda k: k.service_threads if k.service_threads is not None
     else (len(k.service_cpus) if k.service_cpus is not None else k.usable_cpus)),
]


def usable_cpus(run) -> int:
    """CPUs this process may use (``nproc``); ``os.cpu_count()`` only when the probe gives no number."""
    return gather(run.runner, cpu_facts.USABLE_CPUS) or os.cpu_count() or 1


def all_cpus(run) -> int:
    """CPUs installed (``nproc --all``), 1 when the probe gives no number."""
    return gather(run.runner, cpu_facts.ALL_CPUS) or 1


def build_jobs(run, setting: int | Literal["auto"]) -> int:
    """``make -j`` / ``cmake --build -j`` / llama-quantize's threads: the setting, or the usable CPUs."""
    return usable_cpus(run) if setting == "auto" else int(setting)


def sweep(run, usable: int) -> list[int]:
    """The thread counts to measure: ``runtime.bench.threads``, or 1..usable CPUs."""
    t = run.params.runtime.bench.threads
    return list(range(1, usable + 1)) if t == "auto" else list(t)


def known(run, purpose: Purpose, *, measured: int | None = None, help_info: dict | None = None) -> Known:
    usable = usable_cpus(run)
    bench_default = default_threads(help_info) if help_info else None
    if purpose == "bench":
        return Known(usable, measured=measured, bench_default=bench_default)
    sp = run.params.service
    return Known(usable, measured=measured, bench_default=bench_default,
                 service_threads=None if sp.threads == "auto" else int(sp.threads),
                 service_cpus=None if sp.cpus == "auto" else list(sp.cpus),
                 chosen=run.recorded("05", "chosen") or {},
                 survey_cores=find_value(run.recorded("01", "survey") or {}, "physical_cores"))


def decide(purpose: Purpose, k: Known) -> tuple[int, str]:
    """The first rule of ``purpose`` that gives a thread count: (threads, source)."""
    for p, source, rule in RULES:
        if p == purpose:
            t = rule(k)
            if t is not None:
                return int(t), source
    raise ValueError(f"no CPU rule for purpose {purpose!r}")


def affinity(purpose: Purpose, k: Known, threads: int, source: str) -> list[int]:
    """CPUAffinity= for the service: service.cpus, else 05's CPUs (when 05 gave the threads), else
    the first ``threads`` CPUs. The benchmark does not pin: []."""
    if purpose != "service":
        return []
    if k.service_cpus is not None:
        return list(k.service_cpus)
    if source == CHOSEN and k.chosen.get("cpus"):
        return list(k.chosen["cpus"])
    return list(range(threads))


def cpu_plan(run, purpose: Purpose, *, measured: int | None = None, help_info: dict | None = None) -> CpuPlan:
    """Threads and CPUs for ``purpose`` ("bench" or "service").

    ``measured``: the sweep's best thread count in this run; ``help_info``: the built llama-bench's
    parsed ``--help`` (:func:`aios_lib.facts.llama.parse_help`), for its default ``-t``."""
    k = known(run, purpose, measured=measured, help_info=help_info)
    threads, source = decide(purpose, k)
    return CpuPlan(purpose, threads, affinity(purpose, k, threads, source), source, k.usable_cpus,
                   sweep(run, k.usable_cpus), k.bench_default)
