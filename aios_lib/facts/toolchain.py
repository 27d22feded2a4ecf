"""The C/C++ compiler: what it calls itself and what ``-march=native`` means to it.

Build keys hash the compiler's own words, so each caller keeps the exact string it hashes today:
the first line of ``<cc> --version`` (llama.cpp builds, the bandwidth kernel, the compiler
strategy's display) or ``gcc -dumpfullversion`` (kernel builds). Changing either would rebuild
every cached artefact once.

``<cc> -march=native -E -v -`` shows the full ``cc1`` line (the ``-march=`` gcc picked for this CPU
plus one ``-m``/``-mno-`` per ISA extension); ``<cc> -march=native -Q --help=target`` lists every
target option with the value ``-march=native`` gives it.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .base import Fact


def parse_version_line(text: str | None) -> str | None:
    """``cc --version`` -> its first line (``cc (Debian 12.2.0-14+deb12u1) 12.2.0``); None when empty."""
    lines = (text or "").splitlines()
    return lines[0].strip() if lines else None


def parse_full_version(text: str | None, rc: int | None) -> str:
    """``gcc -dumpfullversion`` -> ``12.2.0``; ``unknown`` when it printed nothing, ``none`` when it
    failed or is not installed (the kernel build key has always hashed these words)."""
    if rc != 0:
        return "none"
    return (text or "").strip() or "unknown"


def version_line(cc: str) -> Fact:
    """The first line of ``<cc> --version`` (None when the compiler is not there)."""
    return Fact(name=f"{cc} version", commands={"version": (cc, "--version")},
                parse=lambda o: parse_version_line(o.get("version")), optional=frozenset({"version"}))


def full_version(cc: str = "gcc") -> Fact:
    """``<cc> -dumpfullversion``: ``12.2.0``, ``unknown`` or ``none``."""
    return Fact(name=f"{cc} full version", commands={"version": (cc, "-dumpfullversion")},
                parse=lambda o: parse_full_version(o.get("version"), o.get("version.rc")),
                status=frozenset({"version"}))


def parse_help_target(text: str) -> dict[str, str]:
    """``gcc -Q --help=target`` → {option: value}; value is "enabled"/"disabled" or the setting."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(-m[^\s=]+=?)\s+(.*?)\s*$", line)
        if not m:
            continue
        opt, val = m.group(1), m.group(2)
        val = val.strip("[]") if val.startswith("[") else val
        out.setdefault(opt, val)
    return out


def parse_cc1(text: str) -> dict:
    """``gcc -march=native -E -v -`` → march, mtune, enabled and disabled ISA extensions, cache params."""
    line = next((ln for ln in text.splitlines() if "cc1" in ln and "-march=" in ln), "")
    march = re.search(r"-march=(\S+)", line)
    mtune = re.search(r"-mtune=(\S+)", line)
    enabled, disabled = [], []
    for tok in line.split():
        if tok.startswith("-mno-"):
            disabled.append(tok[5:])
        elif tok.startswith("-m") and "=" not in tok and tok not in ("-m64", "-m32"):
            enabled.append(tok[2:])
    params = dict(re.findall(r"--param\s+(\S+?)=(\S+)", line))
    return {"march": march.group(1) if march else None, "mtune": mtune.group(1) if mtune else None,
            "enabled": enabled, "disabled": disabled, "params": params}


def _cc1(o: Mapping[str, str]) -> dict[str, Any]:
    # gcc -v writes the cc1 line to stderr; stdout holds the (empty) preprocessed input
    return parse_cc1((o.get("cc1.stderr") or "") + (o.get("cc1") or ""))


def native_cc1(cc: str = "gcc") -> Fact:
    """The ``cc1`` line of ``<cc> -march=native -E -v -`` (stdin is empty), parsed by :func:`parse_cc1`."""
    return Fact(name=f"{cc} -march=native (cc1)", commands={"cc1": (cc, "-march=native", "-E", "-v", "-")},
                parse=_cc1, status=frozenset({"cc1"}))


def native_options(cc: str = "gcc") -> Fact:
    """``<cc> -march=native -Q --help=target``, parsed by :func:`parse_help_target`."""
    return Fact(name=f"{cc} -march=native (target options)",
                commands={"options": (cc, "-march=native", "-Q", "--help=target")},
                parse=lambda o: parse_help_target(o.get("options") or ""), optional=frozenset({"options"}))
