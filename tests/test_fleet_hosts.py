"""The fleet on real test hosts: network namespaces on this machine, each with its own root (an
overlay), sshd, cpuset and address on a private bridge (aios_lib.fleet.testbed). Ansible connects
over SSH with a generated key and checked host keys. Everything is removed after, also on failure.
`aios fleet plan/run` are run as a user runs them: the `aios` command in a process of its own.

Needs root, ip netns, a cpuset cgroup and the fleet's packages (scripts/setup.sh installs them)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]


def _can_make_hosts() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts, cgroups)"
    for tool in ("ip", "sshd", "haproxy", "nft", "nsenter", "unshare", "ssh-keygen"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (make setup installs it)"
    if not Path("/sys/fs/cgroup/cpuset/tasks").exists():
        return "no cgroup v1 cpuset controller at /sys/fs/cgroup/cpuset"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    why = _can_make_hosts()
    if why:
        pytest.fail(f"the fleet's test hosts cannot be made here: {why}")
    from aios_lib.core.journal import Journal
    from aios_lib.core.runner import Runner
    from aios_lib.fleet.testbed import Testbed

    d = tmp_path_factory.mktemp("fleet-lab")
    cpus = sorted(os.sched_getaffinity(0))
    runner = Runner(journal=Journal(d / "commands.jsonl"), phase="fleet-test")
    with Testbed(runner, d / "lab", {"h1": [cpus[0]], "h2": [cpus[-1]], "h3": [cpus[0]]}, outsiders=["out"]) as tb:
        yield tb
    from aios_lib.fleet.testbed import BRIDGE

    names = runner.probe(["ip", "netns", "list"], quiet=True).stdout
    assert "synfleet-" not in names and not Path(f"/sys/class/net/{BRIDGE}").exists()


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    d = tmp_path / "outputs"
    monkeypatch.setenv("AIOS_OUTPUTS", str(d))
    return d


def _accepted(lab) -> dict[str, int]:
    return {n: lab.sshd_log(n).count("Accepted publickey") for n, h in lab.hosts.items() if h.ssh}


ROOT = Path(__file__).resolve().parent.parent


def _aios(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, Path]:
    """``aios ARGS`` (the virtualenv's entry point, as the README runs it) in a process of its own,
    with this test's environment (AIOS_OUTPUTS: the temporary outputs folder); the result and the
    fleet record it names."""
    aios = Path(sys.executable).parent / "aios"
    assert aios.exists(), f"{aios}: the aios entry point is not installed (make setup)"
    r = subprocess.run([str(aios), *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    named = [ln.split(": ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("fleet record: ")]
    assert len(named) == 1, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r, Path(named[0])


@pytest.mark.timeout(120)
def test_each_test_host_is_its_own_system(lab):
    r = lab.runner
    for name in ("h1", "h2"):
        h = lab.hosts[name]
        out = r.probe(h.argv(["sh", "-c", "hostname; cat /proc/self/cpuset; ip -o -4 addr show eth0; "
                                          "touch /etc/synapse-host-only; echo done"]), quiet=True).stdout
        assert out.splitlines()[0] == name and f"synfleet-{name}" in out and h.address in out and "done" in out
    # what a host writes stays in its own root
    assert not Path("/etc/synapse-host-only").exists()
    sshd = r.probe(lab.hosts["h1"].argv(["ss", "-Hltn"]), quiet=True).stdout
    assert f"{lab.hosts['h1'].address}:22" in sshd and "0.0.0.0:22" not in sshd


@pytest.mark.timeout(180)
def test_aios_fleet_plan_lists_every_hosts_commands_and_contacts_no_host(lab, outputs, tmp_path):
    inv = lab.inventory(tmp_path / "inv.yaml", synapse={"schema_version": 1, "phases": ["01"]})
    before = _accepted(lab)
    r, d = _aios("fleet", "plan", "--inventory", str(inv), "--no-report", timeout=150)
    assert r.returncode == 0, r.stderr
    assert _accepted(lab) == before  # no SSH login on any host
    fleet = json.loads((d / "fleet.json").read_text())
    assert d.parent == outputs / "fleet" and fleet["plan"] is True and fleet["ok"] is True
    assert [h["status"] for h in fleet["hosts"]] == ["planned"] * 3
    for h in fleet["hosts"]:
        runs = [c for c in h["commands"] if c["step"].startswith("aios run")]
        assert runs and runs[0]["argv"][1] == f"root@{lab.hosts[h['name']].address}"
        assert f"{h['name']} ({lab.hosts[h['name']].address}): planned" in r.stdout
    n = sum(1 for h in fleet["hosts"] for c in h["commands"] if not c["skipped"])
    assert f"plan: {n} command(s) on 3 host(s) would run; none ran" in r.stdout
    # every command on a host was only journaled; what ran was local: Ansible reading the files
    entries = [json.loads(e) for e in (d / "commands.jsonl").read_text().splitlines()]
    ran = [e for e in entries if not e["planned"]]
    assert ran and all(e["kind"] == "probe" for e in ran)
    assert all("ansible-inventory" in e["cmdline"] or "--syntax-check" in e["cmdline"] for e in ran)
    assert any(e["cmdline"].startswith("ssh root@") for e in entries if e["planned"])
    assert not any((outputs / name).exists() for name in ("h1", "h2", "h3"))


@pytest.mark.timeout(420)
def test_aios_fleet_run_two_hosts_and_a_failing_host_does_not_stop_them(lab, outputs, tmp_path):
    inv = lab.inventory(tmp_path / "inv.yaml", synapse={"schema_version": 1, "phases": ["01"]},
                        host_vars={"h3": {"synapse_python": "/nonexistent/bin/python3"}})
    r, d = _aios("fleet", "run", "--inventory", str(inv), "--timeout", "360", timeout=400)
    (tmp_path / "aios.out").write_text(r.stdout + "\n---- stderr\n" + r.stderr)
    # some host failed: exit 1, and the last line on stderr names it
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == "aios: 1 of 3 host(s) did not finish: h3 (failed)"
    fleet = json.loads((d / "fleet.json").read_text())
    assert d.parent == outputs / "fleet" and fleet["plan"] is False
    by = {h["name"]: h for h in fleet["hosts"]}
    for name in ("h1", "h2"):
        h = by[name]
        assert h["status"] == "ok", h["error"]
        rec = Path(h["record"])
        assert rec.parent == outputs / name and rec.name == h["run_id"] and rec.is_dir()
        assert f"{name} ({lab.hosts[name].address}): ok -> {rec}" in r.stdout
        run = json.loads((rec / "run.json").read_text())
        assert run["ok"] and run["machine"] == name and [p["phase"] for p in run["phases"]] == ["01"]
        assert (rec / "01_research_prep.ipynb").exists() and (rec / "01_research_prep.html").exists()
        survey = json.loads((rec / "results.json").read_text())["01"]["summary"]
        assert survey["logical_cpus"] >= 1
        assert any(e["cmdline"].startswith("lscpu") or "cpuinfo" in e["cmdline"]
                   for e in map(json.loads, (rec / "commands.jsonl").read_text().splitlines()))
    bad = by["h3"]
    assert bad["status"] == "failed" and bad["failed_step"].startswith("aios run") and "rc" in bad["error"]
    assert bad["record"] is None
    assert f"h3 ({lab.hosts['h3'].address}): failed" in r.stdout
    assert not fleet["ok"] and {n: h["status"] for n, h in by.items()} == {"h1": "ok", "h2": "ok", "h3": "failed"}
    events = (d / "events.jsonl").read_text().splitlines()
    assert any(json.loads(e)["host"] == "h3" and json.loads(e)["status"] == "failed" for e in events)
    # the fleet report the command wrote (notebook 09) names the failure
    html = d / "09_fleet.html"
    assert f"report: {html}" in r.stdout and "h3" in html.read_text() and "aios run" in html.read_text()


@pytest.fixture(scope="module")
def replicas(lab, llama_build, smollm2):
    from aios_lib.fleet.replicas import Replica, replica_argv

    reps = []
    try:
        for name in ("h1", "h2"):
            h = lab.hosts[name]
            reps.append(Replica(name, h.address, replica_argv(llama_build.binary("llama-server"), smollm2.path,
                                                              h.address, threads=1, slots=2),
                                wrap=h.argv, slots=2).start(lab.runner))
        yield reps
    finally:
        for r in reps:
            r.stop()


# the limit includes the session fixtures' first use: phase 4's build verified (and its AMX repair
# measured) on the real model, a few minutes on a busy 2-core machine, shared with the other slow tests
@pytest.mark.timeout(900)
def test_a_replica_killed_mid_load_every_request_is_counted(lab, replicas, tmp_path):
    from aios_lib.fleet.replicas import kill_test

    res = kill_test(lab.runner, tmp_path, replicas, "h2", requests=24, n_predict=48, kill_after_ok=4)
    (tmp_path / "kill.json").write_text(json.dumps(res, indent=1, default=str))
    c = res["counts"]
    assert c["sent"] == 24 and c["ok"] + c["failed"] == 24 and c["not sent"] == 0, c
    # only what was in flight on the dead replica may fail (at most its slots); everything else completes
    assert c["failed"] <= replicas[1].slots, res["failed"]
    assert all(f["replica"] in ("h2", None) for f in res["failed"])
    # and each failed request was one in flight on the victim when it was killed
    assert {f["i"] for f in res["failed"] if f["replica"] == "h2"} <= set(res["in_flight_on_victim"]), res
    assert set(res["by_replica"]) <= {"h1", "h2", "(no response)"} and res["by_replica"]["h1"]["failed"] == 0
    assert sum(v["ok"] for v in res["by_replica"].values()) == c["ok"]
    # the balancer stopped sending to it within its health-check budget, and never after
    assert res["marked_down_after_s"] is not None and res["marked_down_after_s"] <= res["check_budget_s"]
    assert res["sessions_to_victim_after_down"] == 0
    assert str(res["victim_status_at_end"]).startswith("DOWN")


@pytest.mark.timeout(900)
def test_a_model_split_with_rpc_answers_like_one_host_and_its_port_is_fleet_only(lab, llama_build, smollm2,
                                                                                   tmp_path):
    from aios_lib.context import open_run
    from aios_lib.fleet import rpc
    from aios_lib.params import parse_params

    run = open_run(parse_params({"schema_version": 1}, "<test>"), run_dir=tmp_path / "run", phase="fleet")
    wb = rpc.rpc_build(run, llama_build, smollm2.path)
    assert wb.verification.ok and wb.build.cmake_options["GGML_RPC"] == "ON"
    G = 2**30
    # hosts declared with 0.35 GiB each and a 0.25 GiB reserve: the model does not fit on one
    memory = {"h1": int(0.35 * G), "h2": int(0.35 * G)}
    layout = rpc.choose_layout(smollm2.file_size, memory, int(0.25 * G))
    assert layout.mode == "rpc" and layout.hosts == ["h1", "h2"]
    h1, h2, out = lab.hosts["h1"], lab.hosts["h2"], lab.hosts["out"]
    main = rpc.RpcHost("h1", h1.address, h1.argv)
    remote = rpc.RpcHost("h2", h2.address, h2.argv)
    # the firewall and the server stay up for the reachability checks: start them here
    proc, socks = rpc.start_rpc_server(lab.runner, remote, wb.build.binary("ggml-rpc-server"), [h1.address],
                                       port=50052)
    try:
        assert socks == [(h2.address, 50052)]  # bound to the fleet address only, not 0.0.0.0
        peer = rpc.reachable(lab.runner, h1.argv, h2.address, 50052)
        outsider = rpc.reachable(lab.runner, out.argv, h2.address, 50052)
        controller = rpc.reachable(lab.runner, lambda a: a, h2.address, 50052)
        loopback = rpc.reachable(lab.runner, h2.argv, "127.0.0.1", 50052)
        assert peer["reachable"] is True, peer
        assert outsider["reachable"] is False and controller["reachable"] is False and loopback["reachable"] is False
    finally:
        proc.stop()
        rpc.remove_firewall(lab.runner, remote)
    res = rpc.split_vs_single(lab.runner, wb.build, smollm2.path, smollm2.n_layer, main, [remote], layout.usable,
                              rounds=1, requests=1, n_predict=16, greedy_tokens=24, extra=["--no-repack"])
    (tmp_path / "rpc.json").write_text(json.dumps(res, indent=1, default=str))
    assert 0 < res["offloaded_layers"] < smollm2.n_layer
    g = res["greedy"]
    assert g["reference"] and g["same"], g
    split = [s for s in res["sessions"] if s["side"] == "split"][0]
    assert split["gen_tps"] and split["prompt_tps"]
