#!/usr/bin/env python3
"""Replicas behind HAProxy (1 vs 2, one core each) and a model split with llama.cpp RPC vs one host.

Makes two test hosts on this machine (network namespaces with their own root, sshd and one CPU
each: aios_lib.fleet.testbed), starts one llama-server per host, and measures through HAProxy:

* aggregate generation t/s and p50/p99 time to first token with 1 and 2 replicas, in interleaved
  rounds (the order alternates), the same offered load per replica; the paired ratio 2-vs-1 with a
  95% CI over rounds, and the scaling efficiency (ratio / 2);
* optionally (--kill) one replica killed in the middle of the load, every request counted;
* the RPC variant of the verified build: the model served by one host against the model split over
  both (ggml-rpc-server on the second, firewalled to the first), generation and prompt t/s as paired
  ratios, and whether the greedy output is the same.

    .venv/bin/python bench/fleet_scaling.py [--rounds 3] [--per-replica 6] [--n-predict 32] [--kill]

Needs root. Uses phase 4's verified build and model (built if missing). Run it on an idle machine;
with the default sizes it takes a few minutes once the builds are cached. Records into
outputs/<machine>/<run-id>/results.json under "fleet" (notebook 09 shows the newest).
"""
import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aios_lib.context import open_run  # noqa: E402
from aios_lib.core.records import new_run_id, run_dir_for  # noqa: E402
from aios_lib.fleet import replicas as rep, report, rpc  # noqa: E402
from aios_lib.fleet.testbed import Testbed  # noqa: E402
from aios_lib.measure import stats  # noqa: E402
from aios_lib.params import load_params  # noqa: E402
from aios_lib.runtime import model as model_mod, verify  # noqa: E402


def scaling(run, tb, build, model, a) -> dict:
    reps = []
    try:
        for name in ("h1", "h2"):
            h = tb.hosts[name]
            reps.append(rep.Replica(name, h.address, rep.replica_argv(build.binary("llama-server"), model.path,
                                                                      h.address, threads=1, slots=a.slots),
                                    wrap=h.argv, slots=a.slots).start(run.runner))
        rounds = []
        for r in range(a.rounds):
            order = [1, 2] if r % 2 == 0 else [2, 1]
            points = {}
            for n in order:
                p = rep.scaling_point(run.runner, run.dir / f"lb-{r}-{n}", reps[:n], per_replica=a.per_replica,
                                      n_predict=a.n_predict)
                points[n] = p
                print(f"round {r + 1} {n} replica(s): {p['aggregate_tps']:.1f} t/s aggregate, TTFT p50 "
                      f"{p['ttft_p50_ms']:.0f} ms p99 {p['ttft_p99_ms']:.0f} ms, {p['ok']}/{p['requests']} ok",
                      flush=True)
            rounds.append({"round": r, "order": order, "points": points})
        one = [x["points"][1]["aggregate_tps"] for x in rounds]
        two = [x["points"][2]["aggregate_tps"] for x in rounds]
        ratio = stats.paired_ratio(one, two, "1 replica", "2 replicas")
        eff = {"ratio": ratio.ratio / 2, "ci_low": ratio.ci_low / 2, "ci_high": ratio.ci_high / 2, "rounds": ratio.rounds}
        ttft = stats.paired_ratio([x["points"][1]["ttft_p50_ms"] for x in rounds],
                                  [x["points"][2]["ttft_p50_ms"] for x in rounds], "1 replica", "2 replicas")
        out = {"rounds": rounds, "ratio": ratio.as_dict(), "efficiency": eff, "ttft_ratio": ttft.as_dict(),
               "conditions": {"replicas": "llama-server -t 1 per host, one CPU each (cpuset)",
                              "slots per replica": a.slots, "requests per replica": a.per_replica,
                              "n_predict": a.n_predict, "in flight": "2 x the slots (HAProxy queues the rest)",
                              "model": Path(str(model.path)).name, "build": build.label,
                              "load generator and HAProxy": "on this machine, not pinned"}}
        if a.kill:
            out["kill"] = rep.kill_test(run.runner, run.dir / "lb-kill", reps, "h2", requests=24,
                                        n_predict=a.n_predict, kill_after_ok=4)
        return out
    finally:
        for r in reps:
            r.stop()


def rpc_compare(run, tb, build, model, a) -> dict:
    wb = rpc.rpc_build(run, build, model.path)
    G = 2**30
    usable = {"h1": G, "h2": G}
    # this machine's hosts could each hold the model; the layout decision is shown for declared
    # small hosts, the speed is measured anyway (it is what RPC costs when it is needed)
    layout = rpc.choose_layout(model.file_size, {"h1": int(0.35 * G), "h2": int(0.35 * G)}, int(0.25 * G))
    h1, h2 = tb.hosts["h1"], tb.hosts["h2"]
    res = rpc.split_vs_single(run.runner, wb.build, model.path, model.n_layer, rpc.RpcHost("h1", h1.address, h1.argv),
                              [rpc.RpcHost("h2", h2.address, h2.argv)], usable, rounds=a.rounds, requests=2,
                              n_predict=a.n_predict, extra=["--no-repack"])
    res["layout"] = layout.to_dict()
    res["conditions"] = {"main": "h1 (llama-server -t 1, one CPU)", "remote": "h2 (ggml-rpc-server -t 1, one CPU)",
                         "layers on the remote": f"{res['offloaded_layers']} of {model.n_layer}",
                         "both sides": "--no-repack (the RPC backend has no repacked weights)",
                         "network": "veth pairs on a bridge (no real wire)", "build": wb.build.label}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="parameters/default.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-replica", type=int, default=6, help="requests per replica per measurement")
    ap.add_argument("--slots", type=int, default=2, help="llama-server slots per replica (= HAProxy maxconn)")
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--kill", action="store_true", help="also kill a replica mid-load")
    ap.add_argument("--no-rpc", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, mounts, cgroups)", file=sys.stderr)
        return 2
    params = load_params(a.params)
    run = open_run(params, run_dir=run_dir_for(params.machine_name(), new_run_id(False, "fleet-scaling")),
                   phase="fleet")
    model = model_mod.provision(run)
    build = verify.working_build(run, model.path).build
    cpus = sorted(os.sched_getaffinity(0))
    with Testbed(run.runner, run.dir / "lab", {"h1": [cpus[0]], "h2": [cpus[-1]]}) as tb:
        sc = run.record("scaling", scaling(run, tb, build, model, a))
        print("\n".join(report.scaling_lines(sc)))
        if not a.no_rpc:
            rc = run.record("rpc", rpc_compare(run, tb, build, model, a))
            print("\n".join(report.rpc_lines(rc)))
    eff = sc["efficiency"]["ratio"]
    print(f"record: {run.dir}")
    return 0 if math.isfinite(eff) else 1


if __name__ == "__main__":
    sys.exit(main())
