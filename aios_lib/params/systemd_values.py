"""Values that end up in systemd files: journald.conf options, unit names, sizes, time spans,
addresses. systemd ignores an unknown option or a value it cannot parse with one line in the
journal and carries on with its default; here such a value is refused when the file loads.

Each check returns the problem as a sentence naming the option and the fix, or None. The grammar
is systemd's (``man systemd.syntax``, ``journald.conf(5)``, ``systemd.unit(5)``,
``systemd.resource-control(5)``), version 252 (Debian 12) unless said otherwise.
"""
from __future__ import annotations

import ipaddress
import re

BOOLEANS = {"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"}
LEVELS = {"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "0", "1", "2", "3", "4", "5", "6",
          "7"}
#: journald.conf [Journal] options -> the kind of value each takes
JOURNALD: dict[str, str | set[str]] = {
    "Storage": {"volatile", "persistent", "auto", "none"},
    "Compress": "bool-or-size", "Seal": "bool", "SplitMode": {"uid", "none"},
    "SyncIntervalSec": "time", "RateLimitIntervalSec": "time", "RateLimitBurst": "count",
    "SystemMaxUse": "size", "SystemKeepFree": "size", "SystemMaxFileSize": "size", "SystemMaxFiles": "count",
    "RuntimeMaxUse": "size", "RuntimeKeepFree": "size", "RuntimeMaxFileSize": "size", "RuntimeMaxFiles": "count",
    "MaxRetentionSec": "time", "MaxFileSec": "time",
    "ForwardToSyslog": "bool", "ForwardToKMsg": "bool", "ForwardToConsole": "bool", "ForwardToWall": "bool",
    "TTYPath": "path", "MaxLevelStore": "level", "MaxLevelSyslog": "level", "MaxLevelKMsg": "level",
    "MaxLevelConsole": "level", "MaxLevelWall": "level", "LineMax": "size", "ReadKMsg": "bool", "Audit": "bool",
}
#: unit types (systemd.unit(5))
UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice",
              "scope")
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(" + "|".join(UNIT_TYPES) + r")$")
#: sizes: bytes or a number with a base-1024 suffix (systemd's parse_size)
_SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?\s*[KMGTPE]?$")
#: time spans: "30s", "5min 20s", "1h", plain seconds (systemd.time(7))
_TIME_UNIT = ("usec|us|µs|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|"
              "months|month|M|years|year|y")
_TIME = re.compile(rf"^([0-9]+(\.[0-9]+)?\s*({_TIME_UNIT})?\s*)+$")


def is_unit_name(name: str) -> bool:
    return len(name) <= 255 and bool(_UNIT.match(name))


def unit_name(name: str, *, kind: str | None = None) -> str | None:
    if not is_unit_name(name):
        example = f"e.g. multi-user.{kind}" if kind == "target" else "e.g. cron.service"
        return (f"`{name}` is not a systemd unit name (name.type, type one of {', '.join(UNIT_TYPES)}; "
                f"{example})")
    if kind and not name.endswith(f".{kind}"):
        return f"`{name}` is not a .{kind} unit"
    return None


def size(text: str, *, positive: bool = True) -> str | None:
    t = str(text).strip()
    if not _SIZE.match(t):
        return f"{text!r} is not a size (bytes, or a number with K, M, G, T: e.g. 50M)"
    if positive and float(re.sub(r"[^0-9.]", "", t) or 0) <= 0:
        return f"{text!r} is not a positive size"
    return None


def journald_option(name: str, value) -> str | None:
    """The problem with one ``journald.conf`` option, or None."""
    kind = JOURNALD.get(name)
    if kind is None:
        close = [k for k in JOURNALD if k.lower() == name.lower()]
        hint = f"did you mean `{close[0]}`?" if close else f"known options: {', '.join(JOURNALD)}"
        return f"`{name}` is not a journald.conf option: journald would ignore it; {hint}"
    v = ("yes" if value else "no") if isinstance(value, bool) else str(value).strip()
    if isinstance(kind, set):
        return None if v in kind else f"{name}={v}: journald takes one of {sorted(kind)}"
    if kind == "bool":
        return None if v.lower() in BOOLEANS else f"{name}={v}: journald takes a boolean (yes/no)"
    if kind == "bool-or-size":
        return None if v.lower() in BOOLEANS or not size(v) else f"{name}={v}: journald takes yes/no or a size"
    if kind == "size":
        problem = size(v)
        return f"{name}={v}: {problem}" if problem else None
    if kind == "count":
        return None if re.fullmatch(r"[0-9]+", v) else f"{name}={v}: journald takes a whole number"
    if kind == "time":
        return None if _TIME.match(v) else f"{name}={v}: journald takes a time span (e.g. 30s, 5min, 1h)"
    if kind == "level":
        return None if v.lower() in LEVELS else f"{name}={v}: journald takes a log level ({', '.join(sorted(LEVELS - set('01234567')))})"
    if kind == "path":
        return None if v.startswith("/") else f"{name}={v}: journald takes an absolute path"
    return None


def ip_address_allow(entry: str) -> str | None:
    """One word of ``IPAddressAllow=`` (systemd.resource-control(5)): a keyword, an address or a prefix."""
    if entry in {"any", "localhost", "link-local", "multicast"}:
        return None
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return (f"`{entry}` is not an IPAddressAllow= entry (any, localhost, link-local, multicast, an address "
                "or a prefix like 192.168.10.0/24)")
    return None


def listen_address(host: str) -> str | None:
    """What llama-server's ``--host`` gets: an IP address (a name would need resolving at boot)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"`{host}` is not an IP address (write e.g. 127.0.0.1 or 0.0.0.0)"
    return None


def unit_value(text: str) -> str | None:
    """A value written into a unit file as ``Key=value``: one line and no trailing comment (systemd
    has none: ``#`` after a value becomes part of it)."""
    if "\n" in text or re.search(r"\s[#;]", text):
        return f"{text!r} would break its unit file line (a newline, or a ` #`/` ;` that systemd reads as part of the value)"
    return None


def absolute_path(text: str) -> str | None:
    if not text.startswith("/") or any(c.isspace() for c in text) or "//" in text or text.endswith("/") and text != "/":
        return f"{text!r} is not an absolute path without spaces (e.g. /opt/synapse/llama)"
    return None
