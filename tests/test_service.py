"""The inference service unit: generation, systemd-analyze verify/security, placement, memory, model gate."""
import re
from pathlib import Path

import pytest

from aios_lib.facts import llama as llama_facts, systemd
from aios_lib.runtime import cpus
from aios_lib.service import model_gate, unit_checks, units as service
from aios_lib.service.units import ServiceError

FIX = Path(__file__).resolve().parent / "fixtures" / "service"


def _run(make_run, service_params=None, **more):
    return make_run({"service": {"ram_gib": 8, "memory_reserve_gib": 2, **(service_params or {})}, **more})


def test_blueprint_trailing_comment_is_rejected_by_systemd(make_run, tmp_path):
    """The blueprint's `MemoryHigh=28G  # Leave 4GB for OS`: systemd has no trailing comments, so
    verify reports the value invalid and ignores it (exit status 0!): the limit silently vanishes."""
    run = _run(make_run)
    unit = service.Unit("ollama.service", (FIX / "blueprint-ollama.service").read_text(), "/usr/bin/ollama")
    root = unit_checks.staging_root(run, [unit], {"/usr/bin/ollama": None}, where=tmp_path / "root")
    v = unit_checks.verify(run, "ollama.service", root)
    assert not v.ok
    assert any("Invalid memory limit '28G  # Leave 4GB for OS'" in p for p in v.problems), v.problems
    # OOMScoreAdjust=-500 # Don't kill this: also not a number
    assert any("OOMScoreAdjust" in p or "-500 # Don't kill this" in p for p in v.problems), v.problems
    # and the generator refuses to write such a value at all
    with pytest.raises(ServiceError, match="trailing comments"):
        service.render([("Service", [("MemoryHigh", "28G  # Leave 4GB for OS")])])


def test_staging_tree_is_work_through_the_runner_and_only_planned_in_plan_mode(make_run, tmp_path):
    """The staging tree lives in the run folder: built with runner.work/write_file (journaled), so in
    plan mode nothing is copied and the checks report "planned"."""
    from aios_lib.core.journal import read_journal

    run = make_run(plan=True)
    unit = service.Unit("ollama.service", (FIX / "blueprint-ollama.service").read_text(), "/usr/bin/ollama")
    root = unit_checks.staging_root(run, [unit], {"/usr/bin/ollama": None}, where=tmp_path / "root")
    assert not root.exists()
    entries = read_journal(tmp_path / "run" / "commands.jsonl")
    assert entries and all(e["planned"] and e["kind"] in ("work", "change") for e in entries)
    cmds = [e["cmdline"] for e in entries]
    assert f"cp -a /usr/lib/systemd/system {root}/usr/lib/systemd" in cmds
    assert f"write {root}/etc/systemd/system/ollama.service" in " ".join(cmds)
    assert unit_checks.verify(run, "ollama.service", root).planned
    real = make_run()
    root = unit_checks.staging_root(real, [unit], {"/usr/bin/ollama": None}, where=tmp_path / "real-root")
    assert (root / "etc/systemd/system/ollama.service").read_text() == unit.text
    assert (root / "usr/lib/systemd/system").is_dir() and (root / "lib").resolve() == (root / "usr/lib").resolve()
    assert (root / "usr/bin/ollama").stat().st_mode & 0o777 == 0o755


def test_generated_units_have_the_requested_settings(make_run):
    run = _run(make_run, {"threads": 3, "cpus": [0, 2, 4], "mlock": True, "nice": -5})
    u = service.llama_unit(run, "m.gguf")
    lines = u.text.splitlines()
    for want in ["User=ai", "Group=ai", "CPUSchedulingPolicy=batch", "Nice=-5", "MemoryHigh=6144M",
                 "OOMScoreAdjust=-500", "LimitMEMLOCK=infinity", "CPUAffinity=0 2 4", "Restart=always",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "ReadOnlyPaths=/var/ai-data/models", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "IPAddressDeny=any", "IPAddressAllow=localhost", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service"]:
        assert want in lines, want
    start = next(ln for ln in lines if ln.startswith("ExecStart="))
    assert " -t 3 " in start and "-lm mmap+mlock" in start and "-m /var/ai-data/models/m.gguf" in start
    assert not any(" #" in ln for ln in lines)
    run2 = _run(make_run, {"threads": 2, "cpus": [0, 1], "mlock": False})
    assert not any(ln.startswith("LimitMEMLOCK") for ln in service.llama_unit(run2, "m.gguf").text.splitlines())


def test_the_unit_carries_the_flags_phase_05_kept(make_run):
    """The proof's chosen llama-server flags go into ExecStart=, its threads through the placement;
    a planned proof (nothing measured) adds nothing."""
    run = _run(make_run, {"mlock": False})
    run.results.record("05", "chosen", {"threads": 2, "server_flags": {"--poll": "0", "--no-repack": None,
                                                                       "-lm": "mmap+mlock"}})
    u = service.llama_unit(run, "m.gguf")
    start = next(ln for ln in u.text.splitlines() if ln.startswith("ExecStart="))
    assert " -t 2 " in start and start.endswith("--metrics --poll 0 --no-repack -lm mmap+mlock")
    assert u.meta["flags_from_phase_05"] == {"--poll": "0", "--no-repack": None, "-lm": "mmap+mlock"}
    run.results.record("05", "chosen", {"threads": 2, "server_flags": {"--poll": "0"}, "planned": True})
    assert "--poll" not in service.llama_unit(run, "m.gguf").text


def test_placement_prefers_benchmark_then_survey(make_run):
    run = _run(make_run)
    run.results.record("01", "survey", {"cpu": {"physical_cores": 6}, "memory": {"total_bytes": 16 * 2**30}})
    p = cpus.cpu_plan(run, "service")
    assert (p.threads, p.cpus) == (6, [0, 1, 2, 3, 4, 5]) and "phase 01" in p.source
    run.results.record("05", "chosen", {"threads": 4, "cpus": [0, 1, 2, 3]})
    p = cpus.cpu_plan(run, "service")
    assert (p.threads, p.cpus) == (4, [0, 1, 2, 3]) and "phase 05" in p.source
    u = service.llama_unit(run, "m.gguf")  # the unit takes the same plan when given none
    assert " -t 4 " in u.text and "CPUAffinity=0 1 2 3" in u.text and u.meta["placement_source"] == p.source
    run3 = _run(make_run, {"threads": 1, "cpus": [1]})
    assert cpus.cpu_plan(run3, "service").source.startswith("parameters")


def test_memory_high_from_this_host_without_a_survey(make_run):
    run = make_run({"service": {"memory_reserve_gib": 0.25}})
    b = service.memory_high(run)
    meminfo = [r for r in run.runner.history if r.argv == ["cat", "/proc/meminfo"]]
    assert len(meminfo) == 1 and "this host's /proc/meminfo" in b.source
    # what the inline regex read before MemTotal became the meminfo fact
    assert b.ram_bytes == int(re.search(r"^MemTotal:\s+(\d+) kB", meminfo[0].stdout, re.M).group(1)) * 1024


def test_memory_high_from_params_survey_and_refusal(make_run):
    run = _run(make_run)  # ram_gib 8, reserve 2
    assert service.memory_high(run).high_bytes == 6 * 2**30
    run = make_run({"service": {"memory_reserve_gib": 4}})
    run.results.record("01", "survey", {"memory": {"total_bytes": 32 * 2**30}})
    b = service.memory_high(run)
    assert b.directive == "28672M" and "phase 01" in b.source  # the blueprint's 28G, computed
    # a RAM the parameters state is checked when they load (aios check); one the survey found, here
    from aios_lib.params import ParamsError

    with pytest.raises(ParamsError, match="leaves less than 256 MiB"):
        make_run({"service": {"ram_gib": 2, "memory_reserve_gib": 4}})
    small = make_run({"service": {"memory_reserve_gib": 4}})
    small.results.record("01", "survey", {"memory": {"total_bytes": 2 * 2**30}})
    with pytest.raises(ServiceError, match="too little"):
        service.memory_high(small)


def test_parse_security_fixture():
    for name in ("security-llama-server.txt", "security-llama-server.C.txt"):
        s = systemd.parse_security((FIX / name).read_text())
        assert s.unit == "llama-server.service"
        assert s.exposure is not None and s.level in systemd.LEVEL_RANK
        assert len(s.rows) > 60 and any(not r["set"] for r in s.rows)


@pytest.mark.slow
def test_generated_units_pass_verify_and_score_ok(make_run, llama_build):
    """The real llama-server launcher in a staging tree: verify passes, exposure OK or better."""
    run = _run(make_run, {"threads": 2, "cpus": [0, 1], "mlock": True})
    units = [service.llama_unit(run, "m.gguf"), service.ollama_unit(run)]
    df = unit_checks.check_units(run, units, {units[0].exec_path: llama_build.binary("llama-server"),
                                          units[1].exec_path: None})
    print(df.to_string())
    assert df.attrs["checks"][0].unknown_args == []  # every ExecStart option is in llama-server --help
    for c in df.attrs["checks"]:
        assert c.verify.ok, (c.unit.name, c.verify.problems)
        assert c.security.exposure is not None and c.security.exposure < 5.0, c.security.exposure
        assert c.security.ok_or_better, c.security.level
    assert run.recorded("test", "units")[0]["verify"] == "passes"


def test_model_gate(smollm2, tmp_path):
    g = model_gate.gate_model(smollm2.path, smollm2.sha256)
    assert g.accepted and g.structure_ok and "llama" in g.detail
    with pytest.raises(model_gate.ModelRefused, match="sha256 mismatch"):
        model_gate.gate_model(smollm2.path, "0" * 64)
    # a truncated file pinned by its own hash: the hash matches, the structure does not
    bad = tmp_path / "truncated.gguf"
    with open(smollm2.path, "rb") as f:
        bad.write_bytes(f.read(4 * 2**20))
    from aios_lib.runtime.model import sha256_file

    g = model_gate.gate_model(bad, sha256_file(bad), raise_on_refusal=False)
    assert not g.accepted and not g.structure_ok and "malformed" in g.detail


@pytest.mark.slow
def test_unknown_server_option_is_caught(make_run, llama_build):
    """systemd cannot know llama-server's options: `--mlock` (gone from this llama.cpp) would make the
    service exit at once and restart forever. The check asks the real binary's --help."""
    run = _run(make_run, {"threads": 2, "cpus": [0, 1], "extra_args": ["--mlock"]})
    u = service.llama_unit(run, "m.gguf")
    assert unit_checks.check_arguments(run, u, llama_build.binary("llama-server")) == ["--mlock"]
    flags = llama_facts.parse_help_flags("-t,    --threads N     threads\n-lm,   --load-mode MODE  x\n        - auto: mmap\n")
    assert {"-t", "--threads", "-lm", "--load-mode"} <= flags and "-" not in flags


def test_phase_06_plan_on_a_tuned_profile_shows_its_values_in_the_unit(tmp_path, monkeypatch):
    """A parameter file naming a tuned profile: the plan of phase 06 renders the unit with the
    profile's threads, nice value and llama-server flags, and says which tune run they came from."""
    import nbformat
    import yaml

    from aios_lib.execute import run_phases

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    prof = {"profile_version": 1, "machine": "m", "tune_run": "20261202-000000-tune", "commit": "abc",
            "created": "2026-12-02T00:00:00", "model": "x.gguf", "label": "-t 1, --poll 0, THP always",
            "threads": 1, "server_flags": {"--poll": "0", "--no-repack": None},
            "process": {"policy": "batch", "nice": -7}, "system": {"thp": "always"}, "evidence": {}}
    (tmp_path / "tuned-profile.yaml").write_text(yaml.safe_dump(prof))
    pf = tmp_path / "p.yaml"
    pf.write_text(yaml.safe_dump({"schema_version": 1, "machine": {"name": "t"},
                                  "service": {"profile": "tuned-profile.yaml"}}))
    out = run_phases(str(pf), ["06"], plan=True, log_output=False)
    assert out.ok, out.phases
    nb = nbformat.read(out.run_dir / "06_hardening_packaging.ipynb", as_version=4)
    text = str([c.get("outputs") for c in nb.cells])
    start = next(ln for ln in text.split("\\n") if ln.startswith("ExecStart="))
    assert " -t 1 " in start and "--poll 0" in start and "--no-repack" in start
    assert "Nice=-7" in text and "20261202-000000-tune" in text
