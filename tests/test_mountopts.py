import pytest

from aios_lib.params.mount_options import MountOptionError, fstab_options, normalise_mount_options


def test_blueprint_options_on_xfs_are_refused_with_the_reason():
    with pytest.raises(MountOptionError) as e:
        normalise_mount_options("xfs", ["noatime", "nodiratime", "discard=async", "commit=60"])
    assert "discard=async" in str(e.value) and "btrfs" in str(e.value)
    with pytest.raises(MountOptionError) as e:
        normalise_mount_options("xfs", ["noatime", "commit=60"])
    msg = str(e.value)
    assert "commit=60" in msg and "ext4" in msg and "xfs does not take it" in msg and "\n" not in msg


def test_commit_is_fine_on_ext4_and_discard_async_on_btrfs_only():
    assert normalise_mount_options("ext4", ["noatime", "commit=60"]) == (["noatime", "commit=60"], [])
    assert normalise_mount_options("btrfs", ["discard=async"]) == (["discard=async"], [])
    with pytest.raises(MountOptionError, match="btrfs-only"):
        normalise_mount_options("ext4", ["discard=async"])


def test_nodiratime_is_implied_by_noatime():
    opts, warnings = normalise_mount_options("xfs", ["noatime", "nodiratime"])
    assert opts == ["noatime"]
    assert any("implied" in w for w in warnings)
    # alone it is a valid VFS option and is kept
    assert normalise_mount_options("xfs", ["nodiratime"]) == (["nodiratime"], [])


def test_bad_values_and_conflicts():
    with pytest.raises(MountOptionError, match="whole number"):
        normalise_mount_options("ext4", ["commit=soon"])
    with pytest.raises(MountOptionError, match="data="):
        normalise_mount_options("ext4", ["data=fast"])
    with pytest.raises(MountOptionError, match="conflicting atime"):
        normalise_mount_options("xfs", ["noatime", "relatime"])
    with pytest.raises(MountOptionError, match="unknown filesystem"):
        normalise_mount_options("zfs", ["noatime"])
    with pytest.raises(MountOptionError, match="ext4 does not take it"):
        normalise_mount_options("ext4", ["inode64"])


def test_userspace_and_generic_options_pass():
    opts, _ = normalise_mount_options("xfs", ["noatime", "nofail", "x-systemd.device-timeout=10s", "inode64"])
    assert opts == ["noatime", "nofail", "x-systemd.device-timeout=10s", "inode64"]
    assert fstab_options([]) == "defaults"
    assert fstab_options(opts) == "noatime,nofail,x-systemd.device-timeout=10s,inode64"


def test_parameters_hold_the_normalised_options_and_their_warnings():
    from aios_lib.params import parse_params

    written = ["noatime", "nodiratime", "commit=60", "noatime"]
    p = parse_params({"schema_version": 1, "system": {"filesystem": "ext4", "mount_options": written}})
    assert p.system.mount_options == ["noatime", "commit=60"]
    assert p.warnings == ["key `system.mount_options`: `noatime` is listed twice; kept once",
                          "key `system.mount_options`: `nodiratime` is implied by `noatime`; dropped"]
    assert p.warnings_for("system.mount_options") == ["`noatime` is listed twice; kept once",
                                                      "`nodiratime` is implied by `noatime`; dropped"]


def test_parameter_file_with_invalid_mount_option_is_one_clear_line(tmp_path):
    from aios_lib.params import ParamsError, load_params

    f = tmp_path / "p.yaml"
    f.write_text("schema_version: 1\nsystem:\n  filesystem: xfs\n  mount_options: [noatime, commit=60]\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    msg = str(e.value)
    assert msg.count("\n") == 0
    assert "system.mount_options" in msg and "commit=60" in msg and str(f) in msg
