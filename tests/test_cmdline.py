"""The kernel command line: its rules (params/kernel_cmdline.py, applied when a file loads) and its
assembly into a boot entry's line (system/cmdline.py, which checks nothing again)."""
from pathlib import Path

import pytest

from aios_lib import cli
from aios_lib.params import ParamsError, load_params, parse_params
from aios_lib.params.kernel_cmdline import (MITIGATIONS_WARNING, CmdlineError, check_tokens, is_known,
                                            known_parameters, value_of)
from aios_lib.system.cmdline import assemble, build_cmdline, parse_cmdline

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "parameters").glob("*.yaml"))


def test_known_list_comes_from_the_kernel_documentation():
    names = known_parameters()
    assert len(names) > 900
    for n in ["audit", "mitigations", "nowatchdog", "nmi_watchdog", "transparent_hugepage", "console", "root"]:
        assert n in names
    assert "auditing" not in names and "logic" not in names


@pytest.mark.parametrize("token,message", [
    ("auditing=0", "`auditing=0` is not a kernel parameter; use audit=0"),
    ("logic=no", "`logic=no` is not a kernel parameter; it means nothing to the kernel: remove it"),
    ("turbo_mode=1", "`turbo_mode=1` is not a known kernel parameter (Linux 6.12 kernel-parameters.txt, "
                     "module.param or systemd.*/rd.*); remove or fix it"),
    ("transparent_hugepage=sometimes", "`transparent_hugepage=sometimes`: transparent_hugepage= takes one of "
                                       "['always', 'madvise', 'never']"),
    ("audit=0 quiet", "`audit=0 quiet` must be one word per list item"),
])
def test_refused_tokens_and_their_fix(token, message):
    with pytest.raises(CmdlineError) as e:
        check_tokens(["nowatchdog", token])
    assert str(e.value) == message
    with pytest.raises(CmdlineError) as e:
        check_tokens([token], key="kernel.install.cmdline")
    assert str(e.value) == f"kernel.install.cmdline: {message}"


def test_known_values_module_and_userspace_parameters():
    assert check_tokens(["audit=0", "nowatchdog", "nmi_watchdog=0", "transparent_hugepage=madvise",
                         "i915.enable_guc=2", "systemd.volatile=overlay", "rd.break"]) == []
    assert check_tokens(["mitigations=off", "audit=0"]) == [MITIGATIONS_WARNING]
    assert [is_known(n) for n in ("i915.enable_guc", "systemd.volatile", "rd.break", "auditing.x")] == \
        [True, True, True, False]


def test_value_of_takes_the_last_value_as_the_kernel_does():
    assert value_of(["transparent_hugepage=never", "audit=0", "transparent_hugepage=always"],
                    "transparent_hugepage") == "always"
    assert value_of(["audit=0"], "transparent_hugepage") is None


def test_assemble_adds_root_and_rw_once():
    assert assemble(["audit=0"], "PARTUUID=x") == ["root=PARTUUID=x", "rw", "audit=0"]
    assert assemble(["audit=0"], "PARTUUID=x", rw=False) == ["root=PARTUUID=x", "ro", "audit=0"]
    assert assemble(["ro", "audit=0"], "PARTUUID=x") == ["root=PARTUUID=x", "ro", "audit=0"]
    assert assemble(["root=/dev/vda2", "audit=0"], "PARTUUID=x") == ["rw", "root=/dev/vda2", "audit=0"]


def _params(cmdline, trusted=False, thp="madvise"):
    return parse_params({"schema_version": 1, "machine": {"trusted_offline": trusted},
                         "system": {"kernel_cmdline": cmdline, "thp": thp}}, "<test>")


def test_mitigations_off_is_refused_at_load_without_trusted_offline():
    with pytest.raises(ParamsError) as e:
        _params(["mitigations=off"])
    assert e.value.problems == ["<test>: key `system.kernel_cmdline`: `mitigations=off` needs "
                                "machine.trusted_offline: true (it disables CPU vulnerability mitigations); "
                                "set it or remove mitigations=off"]


def test_build_cmdline_assembles_and_hands_on_the_models_warnings():
    p = _params(["mitigations=off", "audit=0", "transparent_hugepage=always"], trusted=True, thp="never")
    c = build_cmdline(p, "PARTUUID=abc")
    assert c.tokens == ["root=PARTUUID=abc", "rw", "mitigations=off", "audit=0", "transparent_hugepage=always"]
    assert str(c) == "root=PARTUUID=abc rw mitigations=off audit=0 transparent_hugepage=always"
    assert c.warnings == [MITIGATIONS_WARNING,
                          "transparent_hugepage=always on the command line differs from system.thp=never; "
                          "the tmpfiles.d setting wins after boot"]
    assert build_cmdline(_params(["ro", "audit=0"]), "PARTUUID=x").tokens == ["root=PARTUUID=x", "ro", "audit=0"]


def test_parse_proc_cmdline_drops_loader_additions():
    text = "initrd=\\synapse\\6.1.0-50-amd64\\initrd BOOT_IMAGE=/vmlinuz root=PARTUUID=1 rw audit=0\n"
    assert parse_cmdline(text) == ["root=PARTUUID=1", "rw", "audit=0"]


def test_parameter_file_with_unknown_kernel_parameter_is_a_clear_error(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nsystem:\n  kernel_cmdline: [audit=0, auditing=0]\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert e.value.problems == [f"{f}: key `system.kernel_cmdline`: `auditing=0` is not a kernel parameter; "
                                "use audit=0 (got list)"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_parameter_file_checks_and_assembles(path, capsys):
    assert cli.main(["check", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: valid (schema_version 1)")
    p = load_params(path)
    tokens = p.system.kernel_cmdline
    assert build_cmdline(p, "PARTUUID=x").tokens == ["root=PARTUUID=x", "rw", *tokens]
    # the only warning a shipped command line carries is the one its mitigations=off asks for
    expected = [MITIGATIONS_WARNING] if "mitigations=off" in tokens else []
    assert build_cmdline(p).warnings == expected
    assert ("mitigations=off" in tokens) == (path.name == "example-i7-arch.yaml")
