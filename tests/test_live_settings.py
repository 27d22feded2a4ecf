"""Live host settings for measurements: applied, read back, and restored on every way out
(normal end, an exception in the middle of an experiment, SIGTERM, and after SIGKILL from the
ledger). Real sysfs writes of transparent huge pages: needs root and a kernel with THP."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aios_lib.core.journal import read_journal
from aios_lib.core.runner import CommandFailed
from aios_lib.settings import live

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_thp = pytest.mark.usefixtures("thp_writable")  # root and a kernel with THP, or the test fails saying so


def _thp() -> str:
    return live.bracketed(THP.read_text())


def _other(mode: str) -> str:
    return "always" if mode != "always" else "never"


def test_bracketed_and_process_probe_parse():
    assert live.bracketed("always [madvise] never\n") == "madvise"
    assert live.bracketed("always defer defer+madvise [madvise] never") == "madvise"
    assert live.bracketed("[defer+madvise]") == "defer+madvise"
    assert live.bracketed("") is None
    assert live.parse_process_probe("3 -5 0,1\n") == {"policy": "batch", "nice": -5, "cpus": (0, 1)}
    assert live.parse_process_probe("0 0 0") == {"policy": "other", "nice": 0, "cpus": (0,)}
    assert live.parse_process_probe("garbage") == {}


def test_process_prefix_and_read_back(runner):
    p = live.ProcessSettings("batch", 5, (0,))
    assert p.prefix() == ["chrt", "--batch", "0", "nice", "-n", "5", "taskset", "-c", "0"]
    got = live.read_process_settings(runner, p)
    assert got["policy"] == "batch" and got["nice"] == 5 and got["cpus"] == (0,) and got["matches"]
    assert live.ProcessSettings().prefix() == [] and live.ProcessSettings().shown() == "as found"


@needs_thp
def test_apply_read_back_and_restore_on_an_exception(make_run, tmp_path):
    run = make_run()
    found = _thp()
    ledger = tmp_path / "ledger.json"
    with pytest.raises(RuntimeError, match="injected"):
        with live.LiveState(run, {"thp": live.KNOWN["thp"]}, ledger=ledger) as st:
            st.ensure({"thp": _other(found)}, "config B")
            assert _thp() == _other(found) and json.loads(ledger.read_text())["original"] == {"thp": found}
            st.ensure({}, "config A")  # A wants the host as found
            assert _thp() == found
            st.ensure({"thp": _other(found)}, "config B")
            raise RuntimeError("injected failure in the middle of an experiment")
    assert _thp() == found and not ledger.exists()
    actions = [(c.action, c.requested, c.ok) for c in st.changes]
    assert actions == [("apply", _other(found), True), ("restore", found, True), ("apply", _other(found), True),
                       ("restore", found, True)]
    assert st.record()["restored"] is True
    tees = [e for e in read_journal(run.dir / "commands.jsonl") if e["argv"][:2] == ["tee", str(THP)]]
    assert len(tees) == 4  # every change and every restore is in the journal


@needs_thp
def test_a_setting_the_host_does_not_take_is_refused(make_run, tmp_path):
    run = make_run()
    with live.LiveState(run, {"thp": live.KNOWN["thp"]}, ledger=tmp_path / "l.json") as st:
        with pytest.raises(CommandFailed, match="tee"):
            st.ensure({"thp": "sometimes"}, "bad")  # the kernel refuses the write: the command fails
    assert _thp() == st.original["thp"]
    with pytest.raises(ValueError, match="unknown live setting"):
        live.LiveState(run, {}).ensure({"nope": "1"})


SCRIPT = """
import sys, time
from aios_lib.context import open_run
from aios_lib.params import parse_params
from aios_lib.settings import live
from pathlib import Path
run = open_run(parse_params({{"schema_version": 1}}, "<t>"), run_dir=sys.argv[1], plan=False, phase="05")
with live.LiveState(run, {{"thp": live.KNOWN["thp"]}}, ledger=Path(sys.argv[2])) as st:
    st.ensure({{"thp": "{mode}"}}, "long measurement")
    print("applied", flush=True)
    time.sleep(60)
"""


def _start(tmp_path, mode):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT.format(mode=mode), str(tmp_path / "run"),
                          str(tmp_path / "ledger.json")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "applied"
    return p


@needs_thp
def test_sigterm_restores(tmp_path):
    found = _thp()
    p = _start(tmp_path, _other(found))
    assert _thp() == _other(found)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert _thp() == found and not (tmp_path / "ledger.json").exists()


@needs_thp
def test_after_sigkill_the_next_measurement_restores_from_the_ledger(make_run, tmp_path):
    found = _thp()
    p = _start(tmp_path, _other(found))
    p.kill()
    p.wait(timeout=30)
    assert _thp() == _other(found) and (tmp_path / "ledger.json").exists()  # nothing could run on SIGKILL
    run = make_run()
    with live.LiveState(run, {"thp": live.KNOWN["thp"]}, ledger=tmp_path / "ledger.json") as st:
        assert _thp() == found  # restored before anything else
        assert [c.action for c in st.changes] == ["restore-ledger"] and st.original["thp"] == found
    assert not (tmp_path / "ledger.json").exists()


def test_plan_mode_changes_nothing(make_run, tmp_path):
    run = make_run(plan=True)
    before = THP.read_text() if THP.exists() else None
    with live.LiveState(run, ledger=tmp_path / "l.json") as st:
        st.ensure({"thp": "always"}, "x")
    assert (THP.read_text() if THP.exists() else None) == before and not (tmp_path / "l.json").exists()
    planned = [e for e in read_journal(run.dir / "commands.jsonl") if e["planned"]]
    if THP.exists() and "[always]" not in (before or ""):
        assert any(e["argv"][:2] == ["tee", str(THP)] for e in planned)
