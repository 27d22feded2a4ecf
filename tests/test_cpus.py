"""The one CPU plan: every thread-count rule of the benchmark and the service, in precedence order."""
import pytest

from aios_lib.facts import llama as llama_facts
from aios_lib.runtime import cpus


def _run(make_run, service=None, bench=None):
    return make_run({"service": {"ram_gib": 8, **(service or {})}, "runtime": {"bench": bench or {}}})


def test_bench_rules_in_order(make_run, fixtures):
    run = _run(make_run)
    h = llama_facts.parse_help((fixtures / "bench" / "llama-bench-help.txt").read_text())
    usable = cpus.usable_cpus(run)
    p = cpus.cpu_plan(run, "bench", measured=1, help_info=h)
    assert (p.threads, p.source, p.cpus, p.bench_default) == (1, cpus.MEASURED, [], 2)
    p = cpus.cpu_plan(run, "bench", help_info=h)
    assert (p.threads, p.source) == (2, "llama-bench's default -t (its --help)")
    p = cpus.cpu_plan(run, "bench")
    assert (p.threads, p.source, p.usable_cpus) == (usable, "usable CPUs (nproc)", usable)
    assert p.sweep == list(range(1, usable + 1))
    assert cpus.cpu_plan(_run(make_run, bench={"threads": [3, 1]}), "bench").sweep == [3, 1]


def test_service_rules_in_order(make_run):
    run = _run(make_run)
    usable = cpus.usable_cpus(run)
    p = cpus.cpu_plan(run, "service")
    assert (p.threads, p.cpus) == (usable, list(range(usable))) and "no phase 05 or 01 record" in p.source
    run.results.record("01", "survey", {"cpu": {"physical_cores": 6}, "memory": {"total_bytes": 16 * 2**30}})
    p = cpus.cpu_plan(run, "service")
    assert (p.threads, p.cpus) == (6, [0, 1, 2, 3, 4, 5]) and "phase 01" in p.source
    run.results.record("05", "chosen", {"threads": 4, "cpus": [1, 2, 3, 4]})
    p = cpus.cpu_plan(run, "service")
    assert (p.threads, p.cpus, p.source) == (4, [1, 2, 3, 4], cpus.CHOSEN)
    run.results.record("05", "chosen", {"threads": 3})
    assert cpus.cpu_plan(run, "service").cpus == [0, 1, 2]  # 05 names no CPUs: the first three
    # a parameter wins over any record; both parameters are the whole answer
    assert cpus.cpu_plan(_run(make_run, {"threads": 2}), "service").threads == 2
    p = cpus.cpu_plan(_run(make_run, {"threads": 1, "cpus": [1]}), "service")
    assert (p.threads, p.cpus) == (1, [1]) and p.source.startswith("parameters")
    p = cpus.cpu_plan(_run(make_run, {"cpus": [0, 2, 4]}), "service")
    assert (p.threads, p.cpus) == (3, [0, 2, 4])


def test_placement_keeps_the_recorded_keys(make_run):
    run = _run(make_run, {"threads": 2, "cpus": [0, 1]})
    p = cpus.cpu_plan(run, "service")
    assert p.placement() == {"threads": 2, "cpus": [0, 1], "source": "parameters (service.threads, service.cpus)"}
    assert "CPUAffinity=0 1" in p._repr_markdown_()


def test_build_jobs_and_cpu_counts(make_run):
    run = make_run()
    assert cpus.build_jobs(run, 3) == 3
    assert cpus.build_jobs(run, "auto") == cpus.usable_cpus(run) >= 1
    assert 1 <= cpus.usable_cpus(run) <= cpus.all_cpus(run)
    nproc = [r.argv for r in run.runner.history if r.argv[0] == "nproc"]
    assert nproc and all(a in (["nproc"], ["nproc", "--all"]) for a in nproc)


def test_unknown_purpose_is_refused(make_run):
    with pytest.raises(ValueError, match="no CPU rule"):
        cpus.decide("fleet", cpus.Known(usable_cpus=2))
