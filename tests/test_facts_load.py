"""/proc/stat and /proc/loadavg: one parse of the raw fields; the benchmark and the idle-CPU check
each compute their own busy figure from it."""
import pytest

from aios_lib.facts import gather, load
from aios_lib.system import vm


def test_proc_stat_fields(fixtures):
    t = load.parse_proc_stat((fixtures / "service" / "proc-stat-before.txt").read_text())
    # cpu  71662 0 7225 74151 651 0 146 67 0 0
    assert (t.user, t.nice, t.system, t.idle, t.iowait, t.irq, t.softirq, t.steal) == (
        71662, 0, 7225, 74151, 651, 0, 146, 67)
    assert t.total == 71662 + 7225 + 74151 + 651 + 146 + 67 and t.idle_all == 74151 + 651
    assert t.busy_excl_steal == 71662 + 7225 + 146 and t.busy_incl_steal == t.busy_excl_steal + 67
    assert t.ncpu == 0  # the aggregate line alone (as the booted image prints it)
    assert load.parse_proc_stat((fixtures / "bench" / "proc-stat-loadavg.txt").read_text()).ncpu == 2
    with pytest.raises(ValueError, match="no aggregate"):
        load.parse_proc_stat("")


def test_guest_samples_and_old_kernels(fixtures):
    """The booted image prints the aggregate line alone; an old kernel has fewer fields."""
    report = vm.parse_guest_report((fixtures / "service" / "guest-boot1-serial.log").read_text(errors="replace"))
    t = load.parse_proc_stat(report["syn_stat_before"])
    assert (t.user, t.system, t.idle, t.ncpu) == (6453, 7241, 3858, 0)
    assert load.parse_proc_stat("cpu 1 2 3 4").total == 10  # steal and the rest read as 0


def test_loadavg_and_the_fact(fixtures, runner):
    text = (fixtures / "bench" / "proc-stat-loadavg.txt").read_text()
    assert load.parse_loadavg(text) == {"loadavg": [3.56, 2.78, 2.06], "running": 3}
    assert load.parse_loadavg("") is None
    both = load.parse({"load": text})
    assert both["cpu"].ncpu == 2 and both["loadavg"]["running"] == 3
    assert load.parse({"load": ""}) == {"cpu": None, "loadavg": None}
    live = gather(runner, load.FACT)
    assert live["cpu"].total > 0 and len(live["loadavg"]["loadavg"]) == 3
    assert [r.argv for r in runner.history] == [["cat", "/proc/stat", "/proc/loadavg"]]
