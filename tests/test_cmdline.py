import pytest

from aios_lib.system.cmdline import CmdlineError, build_cmdline, check_tokens, is_known, known_parameters, parse_cmdline
from aios_lib.params import ParamsError, load_params, parse_params


def test_known_list_comes_from_the_kernel_documentation():
    names = known_parameters()
    assert len(names) > 900
    for n in ["audit", "mitigations", "nowatchdog", "nmi_watchdog", "transparent_hugepage", "console", "root"]:
        assert n in names
    assert "auditing" not in names and "logic" not in names


def test_blueprint_mistakes_are_errors():
    with pytest.raises(CmdlineError, match="audit=0"):
        check_tokens(["auditing=0"])
    with pytest.raises(CmdlineError, match="means nothing"):
        check_tokens(["logic=no"])
    with pytest.raises(CmdlineError, match="not a known kernel parameter"):
        check_tokens(["turbo_mode=1"])


def test_values_module_and_userspace_parameters():
    assert check_tokens(["audit=0", "nowatchdog", "nmi_watchdog=0", "transparent_hugepage=madvise"]) == []
    with pytest.raises(CmdlineError, match="transparent_hugepage"):
        check_tokens(["transparent_hugepage=sometimes"])
    assert is_known("i915.enable_guc") and is_known("systemd.volatile") and is_known("rd.break")
    with pytest.raises(CmdlineError, match="one word"):
        check_tokens(["audit=0 quiet"])


def _params(cmdline, trusted=False):
    return parse_params({"schema_version": 1, "machine": {"trusted_offline": trusted},
                         "system": {"kernel_cmdline": cmdline}})


def test_mitigations_off_needs_trusted_offline_and_warns():
    with pytest.raises(CmdlineError) as e:
        build_cmdline(_params(["mitigations=off"]))
    assert "machine.trusted_offline" in str(e.value) and "\n" not in str(e.value)
    c = build_cmdline(_params(["mitigations=off", "audit=0"], trusted=True), "PARTUUID=abc")
    assert str(c) == "root=PARTUUID=abc rw mitigations=off audit=0"
    assert any("mitigations=off" in w for w in c.warnings)


def test_build_adds_root_and_rw_once():
    c = build_cmdline(_params(["ro", "audit=0"]), "PARTUUID=x")
    assert c.tokens == ["root=PARTUUID=x", "ro", "audit=0"]


def test_parse_proc_cmdline_drops_loader_additions():
    text = "initrd=\\synapse\\6.1.0-50-amd64\\initrd root=PARTUUID=1 rw audit=0\n"
    assert parse_cmdline(text) == ["root=PARTUUID=1", "rw", "audit=0"]


def test_parameter_file_with_unknown_kernel_parameter_is_a_clear_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nsystem:\n  kernel_cmdline: [audit=0, auditing=0]\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "system.kernel_cmdline" in str(e.value) and "auditing=0" in str(e.value) and "audit=0" in str(e.value)
    assert str(e.value).count("\n") == 0


def test_shipped_parameter_files_validate():
    for f in ["parameters/image-debian.yaml", "parameters/example-i7-arch.yaml"]:
        p = load_params(f)
        build_cmdline(p)
