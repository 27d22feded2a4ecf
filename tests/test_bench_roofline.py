"""The bandwidth kernel (built with gcc through the runner, cached) and the roofline arithmetic."""
import pytest

from aios_lib.benchmark import roofline


def test_parse_stream_output():
    d = roofline.parse_stream('noise\n{"threads": 2, "mib_per_array": 64, "reps": 3, "read_gbs": 26.7, '
                              '"copy_gbs": 24.5, "triad_gbs": 26.4, "checksum": 1}\n')
    assert d["read_gbs"] == 26.7 and d["threads"] == 2
    with pytest.raises(ValueError):
        roofline.parse_stream("nothing")


def test_roofline_point_arithmetic():
    p = roofline.RooflinePoint("smollm2 tg128", tg_ts=100.0, bytes_per_token=96_576_768, bandwidth_gbs=30.0)
    assert p.achieved_gbs == pytest.approx(9.6576768)
    assert p.efficiency == pytest.approx(9.6576768 / 30)
    assert p.ceiling_ts == pytest.approx(30e9 / 96_576_768)
    assert "overhead-bound" in roofline.verdict(p)
    big = roofline.RooflinePoint("syn", tg_ts=30.0, bytes_per_token=800_000_000, bandwidth_gbs=26.0)
    assert "memory-bound" in roofline.verdict(big)


def test_plan_mode_only_plans_the_kernel(make_run, monkeypatch, tmp_path):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(plan=True, phase="05")
    bw = roofline.measure_bandwidth(run, [1, 2])
    assert bw["planned"] and bw["by_threads"] == [] and "best" not in bw
    planned = [r.cmdline for r in run.runner.planned()]
    assert any("-march=native" in c and "stream.c" in c for c in planned)


@pytest.mark.slow
def test_real_bandwidth_kernel(make_run, monkeypatch, tmp_path):
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path / "cache"))
    run = make_run(phase="05")
    bw = roofline.measure_bandwidth(run, [1, 2], mib=64, reps=2)
    assert not bw["planned"] and [r["threads"] for r in bw["by_threads"]] == [1, 2]
    assert all(r["read_gbs"] > 0.5 and r["triad_gbs"] > 0.5 for r in bw["by_threads"])
    assert bw["best"]["read_gbs"] == max(r["read_gbs"] for r in bw["by_threads"])
    again = roofline.build_stream(run)
    assert again.cached and again.binary.exists()
