
import pytest

from aios_lib.core.journal import Journal, read_journal
from aios_lib.core.runner import CommandFailed, DestructiveRefused, Runner


def test_runs_and_journals(runner, tmp_path):
    r = runner.probe(["sh", "-c", "echo hello; echo warn >&2; exit 0"])
    assert r.rc == 0 and r.stdout == "hello\n" and r.stderr == "warn\n"
    assert r.duration >= 0
    entries = read_journal(tmp_path / "commands.jsonl")
    assert len(entries) == 1
    e = entries[0]
    assert e["argv"] == ["sh", "-c", "echo hello; echo warn >&2; exit 0"]
    assert e["rc"] == 0 and e["stdout"] == "hello\n" and e["phase"] == "test" and e["planned"] is False
    assert e["time"] and e["kind"] == "probe"


def test_lc_all_is_c_and_env_and_cwd(runner, tmp_path):
    r = runner.probe(["sh", "-c", 'echo "$LC_ALL $FOO $(pwd)"'], env={"FOO": "bar"}, cwd=tmp_path)
    assert r.stdout.strip() == f"C bar {tmp_path}"


def test_unset_env(runner, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    r = runner.probe(["sh", "-c", 'echo "x${SOURCE_DATE_EPOCH}x"'], unset_env=["SOURCE_DATE_EPOCH"])
    assert r.stdout.strip() == "xx"


def test_stdin(runner):
    assert runner.probe(["cat"], input="abc").stdout == "abc"


def test_failure_names_command_code_and_stderr(runner):
    with pytest.raises(CommandFailed) as exc:
        runner.change(["sh", "-c", "echo boom-detail >&2; exit 3"])
    msg = str(exc.value)
    assert "exited 3" in msg and "sh -c" in msg and "boom-detail" in msg


def test_missing_program_is_rc_127(runner):
    r = runner.probe(["/nonexistent/tool"], check=False)
    assert r.rc == 127


def test_timeout(runner):
    r = runner.probe(["sleep", "30"], timeout=1.5, check=False)
    assert r.timed_out and r.rc == 124 and r.duration < 10


def test_plan_mode_runs_probes_not_changes(tmp_path):
    marker = tmp_path / "made"
    rn = Runner(journal=Journal(tmp_path / "j.jsonl"), plan=True)
    probe = rn.probe(["echo", "facts"])
    change = rn.change(["touch", str(marker)])
    work = rn.work(["touch", str(marker)])
    w = rn.write_file(tmp_path / "conf", "x=1\n")
    assert probe.stdout == "facts\n" and not probe.planned
    assert change.planned and work.planned and w.planned and change.rc is None
    assert not marker.exists() and not (tmp_path / "conf").exists()
    entries = read_journal(tmp_path / "j.jsonl")
    assert [e["planned"] for e in entries] == [False, True, True, True]


def test_planning_runner_journals_into_the_same_record_and_runs_nothing(runner, tmp_path):
    """Commands a real run only shows (an install that is switched off) reach commands.jsonl as planned."""
    marker = tmp_path / "made"
    shown = runner.planning("kernel.install.enabled is false: shown, not run")
    assert shown.plan and not runner.plan and shown.journal is runner.journal and shown.history is runner.history
    r = shown.change(["touch", str(marker)], note="the install")
    w = shown.write_file(tmp_path / "conf", "x=1\n")
    assert r.planned and w.planned and not marker.exists() and not (tmp_path / "conf").exists()
    assert runner.history == [r, w]
    entries = read_journal(tmp_path / "commands.jsonl")
    assert [(e["argv"][0], e["planned"]) for e in entries] == [("touch", True), ("write", True)]
    assert entries[0]["note"] == "the install; kernel.install.enabled is false: shown, not run"
    assert entries[1]["note"] == "kernel.install.enabled is false: shown, not run"
    assert runner.probe(["true"]).rc == 0  # the original still runs


def test_result_types_are_shared_by_runner_and_journal():
    from aios_lib.core import result, runner as runner_mod

    assert runner_mod.CommandResult is result.CommandResult and runner_mod.CommandFailed is result.CommandFailed
    assert runner_mod.DestructiveRefused is result.DestructiveRefused


def test_background_stop_terminates_the_group(tmp_path):
    rn = Runner(journal=Journal(tmp_path / "j.jsonl"))
    bg = rn.spawn(["sh", "-c", "echo up; exec sleep 30"])
    import time

    deadline = time.time() + 5
    while "up" not in bg.output() and time.time() < deadline:
        time.sleep(0.05)
    res = bg.stop(timeout=5)
    assert not bg.alive() and res.rc == -15 and not res.timed_out and "up" in res.stdout
    assert read_journal(tmp_path / "j.jsonl")[-1]["note"] == "background"


def test_destructive_refused_without_confirmation(tmp_path):
    target = tmp_path / "disk.img"
    target.write_bytes(b"\0" * 4096)
    rn = Runner(journal=Journal(tmp_path / "j.jsonl"))
    with pytest.raises(DestructiveRefused) as exc:
        rn.destructive(["sh", "-c", f"echo x > {target}"], device=str(target))
    assert "target.confirm" in str(exc.value)
    assert target.read_bytes() == b"\0" * 4096
    assert read_journal(tmp_path / "j.jsonl") == []  # nothing ran, nothing recorded as run


def test_destructive_refused_with_other_device_confirmed(tmp_path):
    rn = Runner(journal=Journal(None), confirmed_devices=frozenset({"/dev/sdz"}))
    with pytest.raises(DestructiveRefused):
        rn.destructive(["true"], device="/dev/sdy")


def test_destructive_runs_when_confirmed(tmp_path):
    target = tmp_path / "disk.img"
    rn = Runner(journal=Journal(None), confirmed_devices=frozenset({str(target)}))
    rn.destructive(["sh", "-c", f"echo x > {target}"], device=str(target))
    assert target.read_text() == "x\n"


def test_write_file_is_atomic_and_journaled(runner, tmp_path):
    p = tmp_path / "etc" / "x.conf"
    runner.write_file(p, "a=1\n", mode=0o600)
    assert p.read_text() == "a=1\n" and oct(p.stat().st_mode & 0o777) == "0o600"
    assert not list(p.parent.glob(".*aios-tmp"))
    assert read_journal(tmp_path / "commands.jsonl")[-1]["argv"][0] == "write"


def test_progress_shown_for_long_commands(tmp_path):
    seen = []

    class Sink:
        def __init__(self, title):
            pass

        def update(self, elapsed, fraction, last):
            seen.append((fraction, last))

        def done(self, elapsed, rc):
            seen.append(("done", rc))

    rn = Runner(journal=Journal(None), sink_factory=Sink, progress_after=0.5)
    from aios_lib.core.progress import build_progress

    rn.work(["sh", "-c", "echo '[1/4] a'; sleep 1.3; echo '[2/4] b'; sleep 1.3"], progress=build_progress)
    assert ("done", 0) in seen
    assert any(f == 0.5 and last == "[2/4] b" for f, last in seen if f != "done")


def test_build_progress_parser():
    from aios_lib.core.progress import build_progress

    assert build_progress("[ 45%] Building CXX object") == 0.45
    assert build_progress("[12/48] Building C object") == 0.25
    assert build_progress("random") is None


def test_an_interrupt_stops_the_command_and_journals_it(tmp_path):
    """Ctrl-C (SIGINT) of the process while a command runs: the command's process group is stopped
    and the journal shows the command as interrupted."""
    import signal
    import subprocess
    import sys
    import time

    from aios_lib.core.journal import read_journal

    script = f"""
import sys
from aios_lib.core.journal import Journal
from aios_lib.core.runner import Runner
r = Runner(journal=Journal({str(tmp_path / 'j.jsonl')!r}))
print("start", flush=True)
r.work(["sh", "-c", "sleep 60 & echo $! > {tmp_path / 'child.pid'}; wait"])
"""
    # SIGINT back to its default in the child: a suite started in the background (nohup, `make test &`)
    # has it ignored, and Python then never raises KeyboardInterrupt (what Ctrl-C gives a user)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline().strip() == "start"
    pid_file = tmp_path / "child.pid"
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    assert p.returncode != 0
    # sleep is gone (a zombie waiting for its reaper counts as gone); on a loaded machine the kernel
    # may take a moment to deliver the group's signal, so wait up to 10 s rather than a fixed 0.2 s
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    entries = read_journal(tmp_path / "j.jsonl")
    assert entries[-1]["note"] == "interrupted" and entries[-1]["argv"][:2] == ["sh", "-c"]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs: its /proc entry exists and is no zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
