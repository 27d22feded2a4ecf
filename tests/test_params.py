import subprocess
import sys
from pathlib import Path

import pytest

from aios_lib.params import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "parameters").glob("*.yaml")))
def test_shipped_parameter_files_are_valid(name):
    p = load_params(ROOT / "parameters" / name)
    assert p.schema_version == 1


def test_default_touches_no_disk():
    p = load_params(ROOT / "parameters" / "default.yaml")
    assert p.target.kind == "none" and p.target.what is None


def _write(tmp_path, text):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    return f


def test_unknown_key_is_one_line_with_suggestion(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitons: 3\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert len(e.value.problems) == 1
    line = e.value.problems[0]
    assert str(f) in line and "runtime.bench.repetitons" in line and "repetitions" in line


def test_wrong_type(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitions: many\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "runtime.bench.repetitions" in str(e.value) and "'many'" in str(e.value)


def test_impossible_value(tmp_path):
    f = _write(tmp_path, "schema_version: 1\nruntime:\n  bench:\n    repetitions: 0\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "greater than or equal to 1" in str(e.value)


def test_missing_schema_version(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "machine:\n  name: x\n"))
    assert "schema_version: 1" in str(e.value)


def test_newer_schema_version(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "schema_version: 9\n"))
    assert "newer" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(tmp_path / "nope.yaml")
    assert "no such parameter file" in str(e.value)


def test_bad_yaml(tmp_path):
    with pytest.raises(ParamsError) as e:
        load_params(_write(tmp_path, "schema_version: [1\n"))
    assert "not valid YAML" in str(e.value)


def test_disk_target_needs_device():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "target": {"kind": "disk"}})
    assert "target.device" in str(e.value)


def test_git_source_must_be_pinned():
    with pytest.raises(ParamsError) as e:
        parse_params({"schema_version": 1, "runtime": {"llama": {"source": {"provider": "git"}}}})
    assert "ref" in str(e.value)


def test_confirmation_must_match_exactly():
    p = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/disk/by-id/nvme-X",
                                                      "confirm": "/dev/nvme0n1"}})
    assert not p.target.confirmed
    p = parse_params({"schema_version": 1, "target": {"kind": "disk", "device": "/dev/disk/by-id/nvme-X",
                                                      "confirm": "/dev/disk/by-id/nvme-X"}})
    assert p.target.confirmed


@pytest.mark.parametrize("text,needle", [
    ("schema_version: 1\nbogus: 1\n", "unknown key `bogus`"),
    ("schema_version: 1\nruntime: {bench: {threads: lots}}\n", "runtime.bench.threads"),
    (None, "no such parameter file"),
])
def test_cli_exit_2_with_one_line(tmp_path, text, needle):
    f = tmp_path / "p.yaml"
    if text is not None:
        f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "plan", "--params", str(f)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) >= 1 and needle in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_help_explains():
    r = subprocess.run([sys.executable, "-m", "aios_lib.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "list every command, change nothing" in r.stdout
    assert "target.confirm" in r.stdout
