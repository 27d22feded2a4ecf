"""aios lab: a session's copy of the notebooks, its record, and what a notebook shows a person
(run header, plan preview, progress, the confirmation prompt). The browser drives a real session
in tests/test_lab_browser.py."""
import io
import json
import os
from pathlib import Path

import nbformat
import pytest

from aios_lib import lab
from aios_lib.context import SCRATCH, open_run
from aios_lib.core import progress
from aios_lib.core.runner import DestructiveRefused
from aios_lib.params import parse_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    monkeypatch.setenv("AIOS_OUTPUTS", str(out))
    return out


def _code(source, count=None, outputs=()):
    c = nbformat.v4.new_code_cell(source, execution_count=count)
    c.outputs = list(outputs)
    return c


# ---- the session's copies ------------------------------------------------------------------
def test_inject_parameters_rewrites_the_one_cell_a_person_edits():
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('# A template: ...\nparams_file = "parameters/default.yaml"\nrun_dir = None\n'
                                  "# plan = False runs it\nplan = True")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Phase"), p, _code("x = 1")]
    assert lab.inject_parameters(nb, {"params_file": "/p.yaml", "run_dir": "/r", "plan": False}, header="# copy")
    assert p.source.splitlines() == ["# copy", "params_file = '/p.yaml'", "run_dir = '/r'", "# plan = False runs it",
                                     "plan = False"]
    assert nb.cells[2].source == "x = 1"
    assert not lab.inject_parameters(nbformat.v4.new_notebook(), {"plan": True})


def test_prepare_copies_the_templates_and_lists_the_session(outputs):
    session = lab.prepare(ROOT / "parameters" / "default.yaml", ["01", "02"], plan=True)
    assert session.run_dir.parent.parent == outputs and session.run_id.endswith("-plan-lab")
    assert [p.name for p in session.notebooks] == ["01_research_prep.ipynb", "02_base_system.ipynb"]
    nb = nbformat.read(session.notebooks[0], as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert f"run_dir = {str(session.run_dir)!r}" in params.source and "plan = True" in params.source
    assert "A template" not in params.source and session.run_id in params.source
    meta = json.loads((session.run_dir / "run.json").read_text())
    assert meta["session"] == "lab" and [p["status"] for p in meta["phases"]] == ["not run", "not run"]
    index = (outputs / "index.html").read_text()
    assert session.run_id in index and "session open" in index
    # the templates are untouched: the copy is what changed
    template = nbformat.read(ROOT / "notebooks" / "01_research_prep.ipynb", as_version=4)
    assert 'run_dir = None' in next(c for c in template.cells if c.cell_type == "code").source


def test_notebook_outcome_reads_what_was_saved():
    err = nbformat.v4.new_output("error", ename="ValueError", evalue="bad value\nmore", traceback=[])
    nb = nbformat.v4.new_notebook()
    nb.cells = [_code("a", 1), _code("b", 2, [err]), _code("c")]
    assert lab.notebook_outcome(nb) == ("failed", "cell [2] raised ValueError: bad value")
    nb.cells = [_code("a", 1), _code("b", 2), nbformat.v4.new_markdown_cell("text"), _code("  ")]
    assert lab.notebook_outcome(nb) == ("ok", None)
    nb.cells = [_code("a", 1), _code("b")]
    assert lab.notebook_outcome(nb) == ("partial", "1 of 2 cells ran")
    nb.cells = [_code("a"), _code("b")]
    assert lab.notebook_outcome(nb) == ("not run", None)
    assert lab.session_outcome([{"status": "ok"}, {"status": "not run"}]) == "partial"
    assert lab.session_outcome([{"status": "ok"}, {"status": "failed"}]) == "failed"
    assert lab.session_outcome([{"status": "ok"}]) == "ok"


def test_a_save_updates_the_record_and_the_index(outputs):
    session = lab.prepare(ROOT / "parameters" / "default.yaml", ["01", "07"], plan=True)
    nb_path = session.notebooks[0]
    nb = nbformat.read(nb_path, as_version=4)
    for i, c in enumerate(c for c in nb.cells if c.cell_type == "code"):
        c.execution_count = i + 1
    nbformat.write(nb, nb_path)
    # the kernel of 01 opened it for real (the person set plan = False)
    lab.note_phase_opened(session.run_dir, "01", plan=False)
    lab.after_save(model={}, os_path=str(nb_path), contents_manager=None)
    meta = json.loads((session.run_dir / "run.json").read_text())
    first, second = meta["phases"]
    assert (first["status"], first["plan"], second["status"]) == ("ok", False, "not run")
    assert Path(first["html"]).exists() and meta["outcome"] == "partial" and "finished" not in meta
    index = (outputs / "index.html").read_text()
    assert "lab · run 01" in index and "01_research_prep.html" in index

    final = lab.update(session.run_dir, final=True)
    assert final["finished"] and final["outcome"] == "partial"
    assert "session open" not in (outputs / "index.html").read_text()


def test_after_save_ignores_files_outside_a_session(tmp_path):
    nb = tmp_path / "x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    lab.after_save(os_path=str(nb))  # no run.json: nothing to update, and no exception
    assert not (tmp_path / "run.json").exists()


def test_server_is_rooted_in_the_session_on_loopback(tmp_path):
    s = lab.Session(tmp_path / "run", "20260101-000000-plan-lab", ["01"], [tmp_path / "run" / "01_x.ipynb"])
    argv = lab.server_argv(s, "127.0.0.1", 8899, "tok")
    assert f"--ServerApp.root_dir={tmp_path / 'run'}" in argv and "--ServerApp.ip=127.0.0.1" in argv
    assert "--ServerApp.open_browser=False" in argv and "--IdentityProvider.token=tok" in argv
    assert "--ContentsManager.post_save_hook=aios_lib.lab.after_save" in argv
    assert ("--ServerApp.allow_root=True" in argv) == (os.geteuid() == 0)
    text = lab.banner(s, "127.0.0.1", 8899, "tok")
    assert "http://127.0.0.1:8899/lab/tree/01_x.ipynb?token=tok" in text
    assert "ssh -N -L 8899:127.0.0.1:8899 " in text


def test_cli_prepares_a_session_without_a_server(outputs, capsys):
    from aios_lib.cli import main

    assert main(["lab", "01", "--params", str(ROOT / "parameters" / "default.yaml"), "--prepare-only"]) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "01_research_prep.ipynb" in out
    assert len(list(outputs.glob("*/*-plan-lab/run.json"))) == 1


# ---- what open_run shows -------------------------------------------------------------------
def test_a_template_opened_directly_records_into_ignored_scratch(outputs):
    run = open_run(parse_params({"schema_version": 1}, "<test>"), plan=True, phase="01")
    assert run.scratch and run.dir.is_relative_to(outputs / SCRATCH)
    assert "/outputs/_scratch/" in (ROOT / ".gitignore").read_text().split()
    assert "outputs/_scratch/" in repr(run) and "make lab" in run._repr_markdown_()
    from aios_lib.index import list_runs

    assert list_runs(outputs) == []  # a scratch record is never in the index


def test_the_header_says_how_to_leave_plan_mode_and_what_that_changes(tmp_path):
    params = parse_params({"schema_version": 1, "target": {"kind": "image", "image": str(tmp_path / "d.img"),
                                                          "confirm": str(tmp_path / "d.img")}}, "<test>")
    planned = open_run(params, run_dir=tmp_path / "r", plan=True, phase="02")
    md = planned._repr_markdown_()
    assert "PLAN" in md and "`plan = False`" in md and "partitions, formats and installs" in md
    assert "target.confirm" in md and str(tmp_path / "d.img") in md
    real = open_run(params, run_dir=tmp_path / "r", plan=False, phase="01")
    assert "RUN mode" in repr(real) and "changes nothing" in repr(real)


def test_plan_summary_shows_every_command_whole_with_what_it_needs(tmp_path):
    params = parse_params({"schema_version": 1, "target": {"kind": "image", "image": str(tmp_path / "d.img")}},
                          "<test>")
    run = open_run(params, run_dir=tmp_path / "r", plan=True, phase="02")
    long_arg = "x" * 150
    run.runner.probe(["true"])
    run.runner.change(["echo", long_arg], note="a long one")
    run.runner.write_file(tmp_path / "f.conf", "key = value\n")
    run.runner.work(["make", "-j2"])
    run.runner.destructive(["wipefs", "-a", str(tmp_path / "d.img")], device=str(tmp_path / "d.img"))
    s = run.plan_summary()
    assert s.counts == {"probe": 1, "change": 2, "work": 1, "destructive": 1} and s.planned == 4
    assert [r.status for r in s.rows] == ["ok", "planned", "planned", "planned", "planned"]
    text = repr(s)
    assert "x" * 100 in text.replace("\n", "").replace(" ", "")  # the whole argument, wrapped
    assert "needs: plan = False" in text and "(it does not yet: a real run refuses this)" in text
    assert "a real run refuses this until" not in s.rows[-1].note  # said once, under needs
    html = s._repr_html_()
    assert long_arg in html and "key = value" in html and "1 probe, 2 change, 1 work, 1 destructive" in html
    assert "ok True" not in text and "planned" in text


# ---- progress ------------------------------------------------------------------------------
def test_line_sink_prints_each_line_once_at_an_interval(monkeypatch):
    clock = iter([0.0, 1.0, 20.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    sink = progress.LineSink("cmake --build", interval=15.0, stream=out)
    sink.update(5.0, None, "[1/9] a")
    sink.update(6.0, None, "[2/9] b")  # within the interval: not printed
    sink.update(25.0, 0.5, "[5/9] c")
    sink.done(30.0, 0)
    lines = out.getvalue().splitlines()
    assert lines == ["[00:05] cmake --build | [1/9] a", "[00:25]  50.0% (~0m25s left) cmake --build | [5/9] c",
                     "[done in 30s, rc=0] cmake --build"]


def test_sinks_follow_who_watches(monkeypatch):
    monkeypatch.delenv(progress.HEADLESS_ENV, raising=False)
    assert isinstance(progress.make_sink("x"), progress.LineSink)  # plain Python: stderr lines
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    assert isinstance(progress.make_sink("x"), progress.WidgetSink)  # JupyterLab
    assert progress.interactive()
    monkeypatch.setenv(progress.HEADLESS_ENV, "1")
    sink = progress.make_sink("x")  # papermill under aios run: lines on stdout, once
    assert isinstance(sink, progress.LineSink) and sink.stream is progress.sys.stdout
    assert not progress.interactive()


def test_widget_sink_is_one_tqdm_widget_replaced_by_one_line(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj, raw=False):
            shown.append(("update", obj))

    def display(obj, display_id=False, **kw):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    sink = progress.WidgetSink("ninja -C build llama-bench")
    sink.update(6.0, None, "compiling a")
    sink.update(7.0, 0.25, "[3/12] compiling b")
    bar = sink._bar
    assert (bar.total, bar.n) == (100, 25.0) and "[3/12] compiling b" in bar.postfix
    assert bar.format_dict["elapsed"] >= 6.0  # counted from the command's start, not the widget's
    sink.done(9.0, 0)
    assert [k for k, _ in shown] == ["display", "update"]  # one widget, then its one line
    assert shown[-1][1] == {"text/plain": "[done in 9s, rc=0] ninja -C build llama-bench"}


# ---- the confirmation in the notebook --------------------------------------------------------
def test_a_destructive_step_waits_for_the_notebook_prompt_as_well(tmp_path, monkeypatch):
    image = tmp_path / "d.img"
    image.write_bytes(b"\0" * 4096)
    monkeypatch.setattr("aios_lib.context.interactive", lambda: True)
    params = parse_params({"schema_version": 1, "target": {"kind": "image", "image": str(image),
                                                          "confirm": str(image)}}, "<test>")
    run = open_run(params, run_dir=tmp_path / "r", plan=False, phase="02")
    prompt = run.prompt
    assert prompt is not None and prompt.target["by-id"] == str(image) and prompt.target["size"]
    with pytest.raises(DestructiveRefused, match="prompt under the run header"):
        run.runner.destructive(["wipefs", "-a", str(image)], device=str(image))
    prompt.button.click()
    r = run.runner.destructive(["true"], device=str(image))
    assert r.rc == 0 and run.recorded("02", "confirmed_in_notebook")["by-id"] == str(image)


def test_the_prompt_names_the_disk_by_model_size_and_by_id(tmp_path, monkeypatch):
    from aios_lib.core.result import CommandResult

    dev = "/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T000000A"
    params = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": dev, "confirm": dev}}, "<t>")
    run = open_run(params, run_dir=tmp_path / "r", plan=True, phase="02")
    lsblk = json.dumps({"blockdevices": [{"name": "nvme0n1", "path": "/dev/nvme0n1", "model": "Samsung SSD 980 PRO 1TB",
                                          "serial": "S5GXNX0T000000A", "size": 1000204886016, "rota": False,
                                          "tran": "nvme", "type": "disk", "rm": False, "mountpoints": [None],
                                          "fstype": None}]})
    seen = []
    monkeypatch.setattr(run.runner, "probe", lambda argv, **kw: seen.append(argv) or
                        CommandResult(list(argv), "probe", 0, lsblk, "", 0.0, 0.0))
    assert lab.describe_target(run) == {"what": "disk", "by-id": dev, "device": "/dev/nvme0n1",
                                        "model": "Samsung SSD 980 PRO 1TB S5GXNX0T000000A", "size": "931.5 GiB"}
    assert seen[0][0] == "lsblk" and seen[0][-1] == dev


def test_the_prompt_never_replaces_the_parameter_file(tmp_path, monkeypatch):
    image = tmp_path / "d.img"
    monkeypatch.setattr("aios_lib.context.interactive", lambda: True)
    params = parse_params({"schema_version": 1, "target": {"kind": "image", "image": str(image)}}, "<test>")
    run = open_run(params, run_dir=tmp_path / "r", plan=False, phase="02")
    assert run.prompt.button.disabled and "new, 4G" == run.prompt.target["size"]
    run.prompt.button.click()  # a disabled button does nothing
    with pytest.raises(DestructiveRefused, match="target.confirm"):
        run.runner.destructive(["true"], device=str(image))


def test_headless_and_plan_runs_never_prompt(tmp_path, monkeypatch):
    params = parse_params({"schema_version": 1, "target": {"kind": "image", "image": str(tmp_path / "d.img"),
                                                          "confirm": str(tmp_path / "d.img")}}, "<test>")
    assert open_run(params, run_dir=tmp_path / "a", plan=False, phase="02").prompt is None  # not a kernel
    monkeypatch.setattr("aios_lib.context.interactive", lambda: True)
    assert open_run(params, run_dir=tmp_path / "b", plan=True, phase="02").prompt is None
    assert open_run(params, run_dir=tmp_path / "c", plan=False, phase="04").prompt is None
