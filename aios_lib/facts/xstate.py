"""What the kernel enables of the extensions the CPU advertises (the second of three layers).

1. *advertised*: the ``flags`` of /proc/cpuinfo (CPUID as the hypervisor presents it), in
   :mod:`aios_lib.facts.cpu`;
2. *enabled*: XCR0 (``xgetbv``): the register state the OS saves and restores, so the
   instructions that use it do not fault; for AMX also the per-process permission
   ``arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)`` and a tile multiply that must give the right
   sums (this fact);
3. *usable by a build*: a smoke run of the built binary (:mod:`aios_lib.runtime.verify`).

The command is a small C program (``aios_lib/data/xstate.c``) compiled into the cache by the
fact's first command; without a C compiler the fact reports the state as unknown.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from ..core.paths import PACKAGE_DIR, cache_path
from .base import Fact

SOURCE = PACKAGE_DIR / "data" / "xstate.c"
_BIN = cache_path("probes", f"xstate-{hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]}")

#: XCR0 bits: state component -> what needs it
XCR0_BITS = {
    "SSE": (1,),
    "AVX": (2,),
    "AVX-512": (5, 6, 7),  # opmask, ZMM_Hi256, Hi16_ZMM
    "AMX": (17, 18),  # XTILECFG, XTILEDATA
}


def _hex(v: str | None) -> int | None:
    if v and v.startswith("0x"):
        try:
            return int(v, 16)
        except ValueError:
            return None
    return None


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    kv: dict[str, str] = {}
    for line in (o.get("xstate") or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
    xcr0 = _hex(kv.get("xcr0"))
    supp = _hex(kv.get("xcomp_supp"))
    enabled = {name: (all(xcr0 >> b & 1 for b in bits) if xcr0 is not None else None)
               for name, bits in XCR0_BITS.items()}
    return {
        "read": bool(kv),
        "xcr0": kv.get("xcr0"),
        "xcomp_supp": kv.get("xcomp_supp"),
        "xcomp_perm": kv.get("xcomp_perm"),
        "enabled": enabled,
        "kernel_supports_amx": (all(supp >> b & 1 for b in XCR0_BITS["AMX"]) if supp is not None else None),
        "amx_cpuid": kv.get("amx_cpuid") == "1" if "amx_cpuid" in kv else None,
        "amx_permission": kv.get("amx_perm"),
        "amx_tile_run": kv.get("amx_tile_run"),
    }


FACT = Fact(
    name="xstate",
    commands={
        "xstate_dir": ("mkdir", "-p", str(_BIN.parent)),
        "xstate_build": ("cc", "-O2", "-o", str(_BIN), str(SOURCE)),
        "xstate": (str(_BIN),),
    },
    parse=parse,
    optional=frozenset({"xstate_dir", "xstate_build", "xstate"}),
)
