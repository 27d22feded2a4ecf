"""outputs/index.html: one row per run with the machine's hardware, kernel, parameter file, commit,
duration, outcome and headline figure; sortable; built from the records only."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from aios_lib import index

ROOT = Path(__file__).resolve().parent.parent
VM = Path(__file__).parent / "fixtures" / "records" / "vm-20261127-072722-run"  # a real record made before the proof existed


def _run(root: Path, machine: str, run_id: str, meta: dict, results: dict) -> Path:
    d = root / machine / run_id
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"run_id": run_id, "machine": machine, **meta}))
    (d / "results.json").write_text(json.dumps(results))
    return d


def _cells(page: str, run_id: str) -> list[str]:
    tr = next(r for r in page.split("<tr>") if run_id in r)
    return re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)


def test_index_rows_show_machine_kernel_params_commit_duration_outcome_headline(tmp_path):
    survey = json.loads((VM / "results.json").read_text())["01"]["survey"]
    verdict = "Synapse vs stock on this machine: tg64 x1.12 [1.08, 1.16], pp128 x1.30 [1.25, 1.35]"
    _run(tmp_path, "box", "20261202-100000-run",
         {"plan": False, "params_file": "/somewhere/parameters/default.yaml", "commit": "0123456789abcdef",
          "started": "2026-12-02T10:00:00", "finished": "2026-12-02T10:12:05", "ok": True,
          "phases": [{"phase": "01", "status": "ok", "seconds": 2.0, "html": "/x/01_research_prep.html"},
                     {"phase": "05", "status": "ok", "seconds": 700.0, "html": "/x/05_benchmark.html"}]},
         {"01": {"survey": survey},
          "05": {"findings": ["stock: llama.cpp b1234 as released", verdict, "Knobs kept: none."]}})
    _run(tmp_path, "box", "20261202-090000-run",
         {"plan": False, "params_file": "/somewhere/parameters/kernel-tiny.yaml", "started": "2026-12-02T09:00:00",
          "finished": "2026-12-02T09:00:30", "ok": False,
          "phases": [{"phase": "03", "status": "failed", "seconds": 30.0, "error": "boot timed out"}]}, {})
    page = index.write_index(tmp_path).read_text()

    head = re.findall(r"<th>(.*?)</th>", page)
    assert head == index.COLUMNS
    new = _cells(page, "20261202-100000-run")
    col = dict(zip(index.COLUMNS, new))
    assert col["machine"] == "box" and col["mode"] == "run"
    assert col["CPU"].startswith("Intel(R) Xeon(R) Processor · Ice Lake or newer by its flags (CPUID says Emerald")
    assert col["cores"] == f"{survey['cpu']['physical_cores']} / {survey['cpu']['logical_cpus']}"
    assert col["memory"] == f"{survey['memory']['total_bytes'] / 1024**3:.1f} GiB"
    assert col["kernel"] == survey["kernel"]["release"]
    assert col["parameters"] == "parameters/default.yaml" and col["commit"] == "0123456789"
    assert col["duration"] == "12m 05s"
    assert col["outcome"].startswith("<b>ok</b>") and '05_benchmark.html">05 ok</a>' in col["outcome"]
    assert col["headline"] == verdict  # the verdict line, not the finding before it
    old = dict(zip(index.COLUMNS, _cells(page, "20261202-090000-run")))
    assert old["CPU"] == "—" and old["memory"] == "—" and old["duration"] == "30s"
    assert old["outcome"].startswith("<b>failed</b>") and "boot timed out" in page
    # newest first, and sortable: numeric cells carry their value for the script
    assert page.index("20261202-100000-run") < page.index("20261202-090000-run")
    assert f'data-sort="{survey["memory"]["total_bytes"]}"' in page and 'data-sort="725.0"' in page
    assert "<script>" in page and "addEventListener('click'" in page


def test_index_of_a_record_made_before_the_proof(tmp_path):
    """The committed phase 05 record has no findings: its comparison's tg line is the headline."""
    d = tmp_path / "vm" / "20261127-072722-run"
    d.mkdir(parents=True)
    for f in ("run.json", "results.json"):
        shutil.copyfile(VM / f, d / f)
    r = index.row(index.list_runs(tmp_path)[0], tmp_path)
    assert r["headline"].startswith("runbook tg128:") and " vs blueprint " in r["headline"]
    assert r["params_file"] == "parameters/default.yaml" and r["duration_s"] == 700.0
    assert r["kernel"] and r["physical_cores"] == 2
    assert r["commit"] == "—"  # a copy outside the repository: no commit added it, and run.json names none


def test_committed_index_lists_every_record():
    page = (ROOT / "outputs" / "index.html").read_text()
    for run_json in (ROOT / "outputs").glob("*/*/run.json"):
        assert run_json.parent.name in page
    assert re.findall(r"<th>(.*?)</th>", page) == index.COLUMNS


def test_the_sorting_script_parses(tmp_path):
    import subprocess

    node = shutil.which("node")
    assert node, "node is missing: scripts/setup.sh installs it (make setup)"
    js = tmp_path / "sort.js"
    js.write_text(index.SORT_JS)
    r = subprocess.run([node, "--check", str(js)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
