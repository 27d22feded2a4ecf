# %% [markdown]
# # The fleet: one runbook, many hosts
#
# A user with more than one box wants three things, and each has an existing engine:
#
# - **the same runbook on every box, one record per box**: Ansible. `aios fleet run --inventory
#   FILE` installs the runbook on each host of an Ansible inventory over SSH, runs `aios run`
#   (papermill) there with that host's parameter file (its `synapse` variables from the inventory,
#   validated before anything runs), and fetches each host's run folder into
#   `outputs/<host>/<run-id>/`. A failing host does not stop the others; the fleet record
#   (`outputs/fleet/<fleet-id>/fleet.json`) names every host's outcome. `aios fleet plan` lists each
#   host's commands and contacts no host.
# - **requests spread over the boxes' llama-servers**: a real load balancer, HAProxy. Open-source
#   nginx only notices a dead upstream when real requests to it fail (active health checks are an
#   nginx Plus feature); HAProxy checks `/health` on its own clock, routes each request to the
#   replica with the fewest in flight (`leastconn`), never gives a replica more requests than it has
#   slots (`maxconn`) and queues the rest for whichever slot frees first.
# - **a model too large for any one box**: llama.cpp's RPC backend splits its layers over hosts.
#   Over CPUs and a network this is slower than one host whenever the model fits (every token's
#   activations cross the network), so it is the answer only for a model no host can hold; for
#   throughput, replicas are. The RPC server has no authentication ("never run it on an open
#   network", says its README): Synapse binds it to the fleet's private addresses only and
#   firewalls its port to the fleet's peers with nftables.
#
# This notebook reads records only: the newest fleet record (or `fleet_dir`), each host's fetched run
# folder, and the newest scaling and RPC measurements (`bench/fleet_scaling.py` records them).

# %% tags=["parameters"]
params_file = "parameters/default.yaml"
run_dir = None
# By hand this only plans (lists commands, changes nothing); `aios run` passes plan=False.
plan = True
# a fleet record (outputs/fleet/<fleet-id>); None: the newest one
fleet_dir = None

# %%
import aios_lib
from aios_lib.fleet import report
run = aios_lib.open_run(params_file, run_dir=run_dir, plan=plan, phase="09")
fleet = report.load(fleet_dir or report.latest_fleet())
(f"fleet record {fleet['_dir']}: {len(fleet.get('hosts', []))} host(s), "
 f"{'plan' if fleet.get('plan') else 'run'}, {'all ok' if fleet.get('ok') else 'not all ok'}"
 if fleet else "no fleet record yet: `aios fleet run --inventory FILE` makes one")

# %% [markdown]
# ## One row per host
#
# Hardware from the host's phase 01 survey, the configuration its phase 05 chose, its
# stock-vs-Synapse verdict and its served generation rate with a 95% CI. A host is an **outlier**
# when the median of its group (the hosts on the same hardware, CPU model and cores, itself
# included) lies outside its CI; a host alone on its hardware is not judged. Failed and unreachable hosts keep their row, with
# the step that failed and why.

# %%
table = report.fleet_table(fleet) if fleet else None
table if table is not None else "no hosts to show"

# %% [markdown]
# How long each host spent on each step of the playbook (copies and the fetch are quick; `aios run`
# is the phases themselves).

# %%
report.outcome_plot(fleet) if fleet else None

# %%
report.served_plot(table) if table is not None else None

# %% [markdown]
# ## Replicas or RPC
#
# The runbook compares the model's size (plus 20% for the KV cache and buffers) with each host's
# memory less its service reserve (`service.ram_gib` when the parameters set it, else the survey's
# RAM, minus `service.memory_reserve_gib`). Where every host holds the model, one replica per
# host serves the most requests; only when none does is the model split with RPC, over the fewest
# hosts that hold it together.

# %%
model_bytes = next((r.get("04", {}).get("model", {}).get("file_size")
                    for r in report.host_results(fleet) if r.get("04", {}).get("model", {}).get("file_size")),
                   None) if fleet else None
layout = report.layout_for_fleet(fleet, model_bytes) if fleet and model_bytes else None
layout if layout is not None else "no host recorded its model (phase 04): nothing to decide yet"

# %% [markdown]
# ## Replicas behind HAProxy: scaling, and a replica killed mid-load
#
# From the newest `bench/fleet_scaling.py` record: aggregate generation rate and time to first
# token through the balancer for 1 and 2 replicas (one core each), in interleaved rounds, with the
# paired ratio 2-vs-1 and the scaling efficiency (aggregate at N / (N x one replica)).

# %%
scaling = report.latest_measurement("scaling")
report.scaling_table(scaling[1]) if scaling else "no scaling measurement recorded yet: run bench/fleet_scaling.py"

# %%
"\n".join(report.scaling_lines(scaling[1])) if scaling else None

# %% [markdown]
# ## A model split over two hosts with RPC
#
# The same greedy completion (temperature 0, fixed seed) from one host and from the split model,
# and the speed of each: the split must say the same, and is expected to be slower.

# %%
rpc_rec = report.latest_measurement("rpc")
"\n".join(report.rpc_lines(rpc_rec[1])) if rpc_rec else "no RPC measurement recorded yet: run bench/fleet_scaling.py"

# %%
run.record("findings", report.findings(fleet, scaling[1] if scaling else None, rpc_rec[1] if rpc_rec else None))
