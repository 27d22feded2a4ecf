"""Mount options checked against the filesystem that has to take them.

The blueprint (section 1.4) asks for ``noatime, nodiratime, discard=async, commit=60`` on an XFS
root. XFS mounts refuse two of those: ``commit=`` is an ext4 (and btrfs) journal option and
``discard=async`` is btrfs-only. ``nodiratime`` is implied by ``noatime`` (the kernel skips
directory atime updates whenever it skips all atime updates), so it is dropped with a warning.

:func:`normalise_mount_options` is pure: it raises :class:`MountOptionError` (one line, naming
the option, the filesystem and the fix) or returns the options to use plus warnings. The parameter
model calls it once, when the file loads (:data:`aios_lib.params.types.MountOptions`), and keeps the
result in ``system.mount_options``.
"""
from __future__ import annotations

import re

#: VFS options every filesystem takes (mount(8) "FILESYSTEM-INDEPENDENT MOUNT OPTIONS")
GENERIC = {
    "defaults", "rw", "ro", "atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime",
    "lazytime", "nolazytime", "diratime", "nodiratime", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
    "sync", "async", "dirsync", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group",
    "_netdev", "iversion", "noiversion", "mand", "nomand", "silent", "loud", "remount", "bind",
}
#: per filesystem: option names (``name`` for flags, ``name=`` for options with a value)
BY_FS: dict[str, set[str]] = {
    "xfs": {
        "allocsize=", "attr2", "noattr2", "discard", "nodiscard", "grpid", "bsdgroups", "nogrpid", "sysvgroups",
        "filestreams", "ikeep", "noikeep", "inode32", "inode64", "largeio", "nolargeio", "logbufs=", "logbsize=",
        "logdev=", "rtdev=", "noalign", "norecovery", "nouuid", "noquota", "uquota", "usrquota", "quota",
        "uqnoenforce", "qnoenforce", "gquota", "grpquota", "gqnoenforce", "pquota", "prjquota", "pqnoenforce",
        "sunit=", "swidth=", "swalloc", "wsync", "dax", "dax=",
    },
    "ext4": {
        "commit=", "discard", "nodiscard", "data=", "barrier", "barrier=", "nobarrier", "journal_checksum",
        "nojournal_checksum", "journal_async_commit", "errors=", "orlov", "oldalloc", "user_xattr",
        "nouser_xattr", "acl", "noacl", "delalloc", "nodelalloc", "max_batch_time=", "min_batch_time=",
        "journal_ioprio=", "auto_da_alloc", "noauto_da_alloc", "stripe=", "inode_readahead_blks=",
        "init_itable", "init_itable=", "noinit_itable", "dioread_nolock", "dioread_lock", "i_version",
        "resuid=", "resgid=", "sb=", "grpid", "nogrpid", "bsdgroups", "sysvgroups", "quota", "noquota",
        "usrquota", "grpquota", "prjquota", "nombcache", "dax", "dax=", "block_validity", "noblock_validity",
        "jqfmt=", "usrjquota=", "grpjquota=", "journal_dev=", "journal_path=", "norecovery", "noload",
        "data_err=",
    },
    "btrfs": {
        "discard", "discard=", "nodiscard", "compress", "compress=", "compress-force", "compress-force=",
        "ssd", "nossd", "ssd_spread", "nossd_spread", "space_cache", "space_cache=", "nospace_cache",
        "autodefrag", "noautodefrag", "commit=", "subvol=", "subvolid=", "degraded", "datacow", "nodatacow",
        "datasum", "nodatasum", "barrier", "nobarrier", "flushoncommit", "noflushoncommit", "acl", "noacl",
        "thread_pool=", "max_inline=", "metadata_ratio=", "skip_balance", "treelog", "notreelog", "user_subvol_rm_allowed",
        "rescue=", "fatal_errors=", "clear_cache", "check_int", "device=",
    },
    "vfat": {
        "uid=", "gid=", "umask=", "dmask=", "fmask=", "allow_utime=", "check=", "codepage=", "iocharset=",
        "shortname=", "utf8", "utf8=", "uni_xlate", "posix", "nonumtail", "usefree", "flush", "tz=", "time_offset=",
        "quiet", "showexec", "debug", "discard", "dos1xfloppy", "errors=", "nfs=", "rodir", "sys_immutable",
    },
}
#: values checked where a wrong one would only show at mount time
VALUES = {
    ("ext4", "data"): {"journal", "ordered", "writeback"},
    ("ext4", "errors"): {"continue", "remount-ro", "panic"},
    ("btrfs", "discard"): {"sync", "async"},
    ("xfs", "dax"): {"always", "never", "inode"},
}
INTEGER = {("ext4", "commit"), ("btrfs", "commit"), ("ext4", "stripe"), ("xfs", "logbufs")}
#: options whose home filesystem is worth naming when another filesystem is asked to take them
HOME = {"commit=": "ext4 and btrfs", "discard=": "btrfs", "data=": "ext4", "compress=": "btrfs",
        "ssd": "btrfs", "space_cache": "btrfs", "barrier=": "ext4", "journal_checksum": "ext4",
        "allocsize=": "xfs", "logbsize=": "xfs", "inode64": "xfs"}
ATIME = {"atime", "noatime", "relatime", "strictatime"}


class MountOptionError(ValueError):
    """An option the filesystem does not take (one line, names the option and the fix)."""


def _key(opt: str) -> tuple[str, str | None]:
    if "=" in opt:
        name, value = opt.split("=", 1)
        return name + "=", value
    return opt, None


def normalise_mount_options(fs: str, options: list[str]) -> tuple[list[str], list[str]]:
    """Check ``options`` for filesystem ``fs``; return (options to use, warnings).

    Raises :class:`MountOptionError` for an option ``fs`` does not take, a bad value, or two
    atime policies at once.
    """
    if fs not in BY_FS:
        raise MountOptionError(f"unknown filesystem {fs!r}: known are {', '.join(sorted(BY_FS))}")
    taken = GENERIC | BY_FS[fs]
    out: list[str] = []
    warnings: list[str] = []
    for raw in options:
        opt = raw.strip()
        if not opt:
            continue
        if opt.startswith("x-") or opt.startswith("comment="):  # userspace options (x-systemd.*)
            out.append(opt)
            continue
        name, value = _key(opt)
        bare = name.rstrip("=")
        if name not in taken:
            if name.endswith("=") and bare in taken and name not in taken:
                where = HOME.get(name, "another filesystem")
                raise MountOptionError(f"mount option `{opt}`: {fs} takes `{bare}` without a value; "
                                       f"`{opt}` is {where}-only. Use `{bare}` (or run fstrim.timer) instead")
            home = HOME.get(name) or next((f for f, names in BY_FS.items() if name in names), None)
            hint = f"`{opt}` is for {home} only; " if home else ""
            raise MountOptionError(f"mount option `{opt}`: {hint}{fs} does not take it. "
                                   f"Remove it from system.mount_options")
        if value is not None:
            allowed = VALUES.get((fs, bare))
            if allowed and value not in allowed:
                raise MountOptionError(f"mount option `{opt}`: {fs} takes {bare}= one of {sorted(allowed)}")
            if (fs, bare) in INTEGER and not re.fullmatch(r"[0-9]+", value):
                raise MountOptionError(f"mount option `{opt}`: {bare}= needs a whole number")
        if opt in out:
            warnings.append(f"`{opt}` is listed twice; kept once")
            continue
        out.append(opt)
    policies = [o for o in out if o in ATIME]
    if len(policies) > 1:
        raise MountOptionError(f"mount options {policies} are conflicting atime policies: keep one")
    if "noatime" in out and "nodiratime" in out:
        out.remove("nodiratime")
        warnings.append("`nodiratime` is implied by `noatime`; dropped")
    return out, warnings


def fstab_options(options: list[str]) -> str:
    """The options field of an fstab line, from already normalised options."""
    return ",".join(options) or "defaults"
