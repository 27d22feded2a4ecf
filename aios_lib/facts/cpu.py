"""The CPU: vendor, generation, topology (sockets, cores, threads, hybrid P/E), ISA flags, caches.

Sources, all read through the runner: ``/proc/cpuinfo``, ``lscpu -J`` (the text layout of plain
``lscpu`` parses too, so public samples can serve as fixtures), ``lscpu -p=CPU,CORE,SOCKET,NODE``,
the hybrid PMU cpu lists ``/sys/devices/cpu_core/cpus`` and ``/sys/devices/cpu_atom/cpus``, the
per-CPU ``cpu_capacity`` and cpu0's cache directory.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from ._text import (format_cpulist, grep_lines, parse_cpuinfo, parse_cpulist, parse_lscpu,
                    parse_lscpu_p, parse_size)
from .base import Fact

# ---- generation names ---------------------------------------------------------------------

#: Intel family 6 model -> microarchitecture / product generation.
INTEL_FAMILY6 = {
    0x1A: "Nehalem", 0x1E: "Nehalem", 0x1F: "Nehalem", 0x2E: "Nehalem-EX",
    0x25: "Westmere", 0x2C: "Westmere-EP", 0x2F: "Westmere-EX",
    0x2A: "Sandy Bridge", 0x2D: "Sandy Bridge-E",
    0x3A: "Ivy Bridge", 0x3E: "Ivy Bridge-E",
    0x3C: "Haswell", 0x45: "Haswell", 0x46: "Haswell", 0x3F: "Haswell-E/EP",
    0x3D: "Broadwell", 0x47: "Broadwell", 0x4F: "Broadwell-E/EP", 0x56: "Broadwell-DE",
    0x4E: "Skylake", 0x5E: "Skylake",
    0x55: "Skylake-SP/X",  # refined by stepping below (Cascade Lake, Cooper Lake)
    0x8E: "Kaby Lake / Coffee Lake / Whiskey Lake / Comet Lake (mobile)",
    0x9E: "Kaby Lake / Coffee Lake",  # refined by stepping below
    0xA5: "Comet Lake", 0xA6: "Comet Lake",
    0x66: "Cannon Lake",
    0x7D: "Ice Lake", 0x7E: "Ice Lake", 0x6A: "Ice Lake-SP", 0x6C: "Ice Lake-D",
    0x8C: "Tiger Lake", 0x8D: "Tiger Lake",
    0xA7: "Rocket Lake",
    0x97: "Alder Lake", 0x9A: "Alder Lake", 0xBE: "Alder Lake-N",
    0xB7: "Raptor Lake", 0xBA: "Raptor Lake", 0xBF: "Raptor Lake",
    0xAA: "Meteor Lake", 0xAC: "Meteor Lake",
    0xBD: "Lunar Lake",
    0xC5: "Arrow Lake", 0xC6: "Arrow Lake", 0xB5: "Arrow Lake",
    0xCC: "Panther Lake",
    0x8F: "Sapphire Rapids", 0xCF: "Emerald Rapids", 0xAD: "Granite Rapids", 0xAE: "Granite Rapids-D",
    0xAF: "Sierra Forest", 0xDD: "Clearwater Forest",
    0x57: "Knights Landing", 0x85: "Knights Mill",
    0x5C: "Goldmont", 0x5F: "Goldmont", 0x7A: "Goldmont Plus",
    0x86: "Tremont", 0x96: "Tremont", 0x9C: "Tremont",
}

#: Intel models that ship as hybrid (P + E cores) parts; some SKUs of them have P cores only.
INTEL_HYBRID_MODELS = {0x97, 0x9A, 0xB7, 0xBA, 0xBF, 0xAA, 0xAC, 0xBD, 0xC5, 0xC6, 0xB5, 0xCC}


def generation(vendor: str | None, family: int | None, model: int | None, stepping: int | None = None) -> str | None:
    """A human name for the CPU generation, or None where the table does not know it."""
    if family is None or model is None:
        return None
    if vendor == "GenuineIntel" and family == 6:
        if model == 0x55 and stepping is not None:
            if stepping >= 10:
                return "Cooper Lake"
            if stepping >= 5:
                return "Cascade Lake"
            return "Skylake-SP/X"
        if model == 0x9E and stepping is not None:
            return "Kaby Lake" if stepping <= 9 else "Coffee Lake"
        return INTEL_FAMILY6.get(model)
    if vendor == "AuthenticAMD":
        if family == 0x15:
            return "Bulldozer family (Bulldozer/Piledriver/Steamroller/Excavator)"
        if family == 0x16:
            return "Jaguar/Puma"
        if family == 0x17:
            return "Zen 2" if model >= 0x30 else ("Zen+" if model in (0x08, 0x18) else "Zen")
        if family == 0x19:
            if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F:
                return "Zen 4"
            if 0xA0 <= model <= 0xAF:
                return "Zen 4c"
            if 0x40 <= model <= 0x4F:
                return "Zen 3+"
            return "Zen 3"
        if family == 0x1A:
            return "Zen 5"
    return None


# ---- generation from the ISA flags ---------------------------------------------------------
#
# A hypervisor rewrites CPUID: it may report another model number than the host's (a cloud VM on
# a Sapphire Rapids host reporting model 0xA7, a Rocket Lake number) and it may hide extensions the
# host has (AMX and AVX512-BF16 masked on an Emerald Rapids host). The flags are what code may
# use, so the generation is cross-checked against them: each marker extension below first
# appeared in the named generation, and a generation's own set says what every part of it has.

#: marker extension (/proc/cpuinfo name) -> (Intel generation that introduced it, its rank)
INTEL_FIRST = {
    "avx": ("Sandy Bridge", 1), "avx2": ("Haswell", 2), "avx512f": ("Skylake-SP/X", 3),
    "avx512_vnni": ("Cascade Lake", 4), "avx512_bf16": ("Cooper Lake", 5), "avx512_vbmi2": ("Ice Lake", 5),
    "avx512_vp2intersect": ("Tiger Lake", 6), "avx_vnni": ("Alder Lake", 7),
    "amx_tile": ("Sapphire Rapids", 8), "avx512_fp16": ("Sapphire Rapids", 8), "amx_fp16": ("Granite Rapids", 9),
}
#: the same for AMD (no AMD part has AMX or AVX512-FP16)
AMD_FIRST = {
    "avx": ("Bulldozer", 1), "avx2": ("Excavator", 2), "avx512f": ("Zen 4", 3), "avx512_vnni": ("Zen 4", 3),
    "avx512_bf16": ("Zen 4", 3), "avx512_vbmi2": ("Zen 4", 3), "avx_vnni": ("Zen 5", 4),
    "avx512_vp2intersect": ("Zen 5", 4),
}
#: the names people read for the marker flags
MARKER_NAMES = {"avx": "AVX", "avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI",
                "avx512_bf16": "AVX512-BF16", "avx512_vbmi2": "AVX512-VBMI2", "avx512_vp2intersect": "AVX512-VP2INTERSECT",
                "avx_vnni": "AVX-VNNI", "amx_tile": "AMX", "avx512_fp16": "AVX512-FP16", "amx_fp16": "AMX-FP16"}

_AVX2 = {"avx", "avx2"}
_ICL = _AVX2 | {"avx512f", "avx512_vnni", "avx512_vbmi2"}
_SPR = _ICL | {"avx512_bf16", "avx_vnni", "amx_tile", "avx512_fp16"}
_ZEN4 = _AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16", "avx512_vbmi2"}
#: generation -> the marker extensions every part of it has (generations not listed are not checked)
GENERATION_MARKERS: dict[str, set[str]] = {
    "Sandy Bridge": {"avx"}, "Sandy Bridge-E": {"avx"}, "Ivy Bridge": {"avx"}, "Ivy Bridge-E": {"avx"},
    **{g: set(_AVX2) for g in ("Haswell", "Haswell-E/EP", "Broadwell", "Broadwell-E/EP", "Broadwell-DE", "Skylake",
                                "Kaby Lake", "Coffee Lake", "Kaby Lake / Coffee Lake", "Comet Lake",
                                "Kaby Lake / Coffee Lake / Whiskey Lake / Comet Lake (mobile)")},
    "Skylake-SP/X": _AVX2 | {"avx512f"}, "Cascade Lake": _AVX2 | {"avx512f", "avx512_vnni"},
    "Cooper Lake": _AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"},
    **{g: set(_ICL) for g in ("Ice Lake", "Ice Lake-SP", "Ice Lake-D", "Rocket Lake")},
    "Tiger Lake": _ICL | {"avx512_vp2intersect"},
    **{g: _AVX2 | {"avx_vnni"} for g in ("Alder Lake", "Alder Lake-N", "Raptor Lake", "Meteor Lake", "Arrow Lake",
                                           "Lunar Lake", "Sierra Forest")},
    "Sapphire Rapids": set(_SPR), "Emerald Rapids": set(_SPR), "Granite Rapids": _SPR | {"amx_fp16"},
    "Bulldozer": {"avx"}, "Excavator": set(_AVX2), "Zen": set(_AVX2), "Zen+": set(_AVX2), "Zen 2": set(_AVX2), "Zen 3": set(_AVX2), "Zen 3+": set(_AVX2),
    "Zen 4": set(_ZEN4), "Zen 4c": set(_ZEN4), "Zen 5": _ZEN4 | {"avx_vnni", "avx512_vp2intersect"},
}

#: gcc's -march= names -> the generation they stand for (what ``-march=native`` resolved to)
GCC_MARCH = {
    "sandybridge": "Sandy Bridge", "ivybridge": "Ivy Bridge", "haswell": "Haswell", "broadwell": "Broadwell",
    "skylake": "Skylake", "skylake-avx512": "Skylake-SP/X", "cascadelake": "Cascade Lake",
    "cooperlake": "Cooper Lake", "cannonlake": "Cannon Lake", "icelake-client": "Ice Lake",
    "icelake-server": "Ice Lake-SP", "tigerlake": "Tiger Lake", "rocketlake": "Rocket Lake",
    "alderlake": "Alder Lake", "raptorlake": "Raptor Lake", "meteorlake": "Meteor Lake", "arrowlake": "Arrow Lake",
    "lunarlake": "Lunar Lake", "sapphirerapids": "Sapphire Rapids", "emeraldrapids": "Emerald Rapids",
    "graniterapids": "Granite Rapids", "sierraforest": "Sierra Forest", "znver1": "Zen", "znver2": "Zen 2",
    "znver3": "Zen 3", "znver4": "Zen 4", "znver5": "Zen 5", "x86-64": "baseline x86-64",
}


def _names(markers) -> str:
    return ", ".join(MARKER_NAMES.get(m, m) for m in sorted(markers, key=lambda m: list(MARKER_NAMES).index(m)))


#: generations in the order their ISA grew, per vendor: the floor is the first whose markers
#: include every marker the flags show (Ice Lake lacks BF16 and Cooper Lake VBMI2: both at once
#: first appear in Sapphire Rapids)
FLOOR_ORDER = {
    "GenuineIntel": ["Sandy Bridge", "Haswell", "Skylake-SP/X", "Cascade Lake", "Cooper Lake", "Ice Lake",
                     "Tiger Lake", "Alder Lake", "Sapphire Rapids", "Granite Rapids"],
    "AuthenticAMD": ["Bulldozer", "Excavator", "Zen 4", "Zen 5"],
}


def generation_from_flags(vendor: str | None, flags) -> dict[str, Any] | None:
    """The oldest generation whose ISA the flags show: ``{"floor", "markers"}``.

    None for a vendor without a table. ``floor`` is a lower bound ("Ice Lake or newer"): flags
    only ever show what a CPU has at least; ``markers`` are the marker extensions present."""
    table = {"GenuineIntel": INTEL_FIRST, "AuthenticAMD": AMD_FIRST}.get(vendor or "")
    if table is None:
        return None
    have = [f for f in table if f in set(flags)]
    if not have:
        return {"floor": None, "markers": []}
    floor = next((g for g in FLOOR_ORDER[vendor] if set(have) <= GENERATION_MARKERS[g]), None)
    if floor is None:  # no generation has all of them (AMX on an AMD CPU): the newest marker decides
        top = max(table[f][1] for f in have)
        floor = next(table[f][0] for f in have if table[f][1] == top)
    return {"floor": floor, "markers": have}


def generation_check(vendor: str | None, generation_name: str | None, flags, *, march: str | None = None,
                     virtual: bool = False, model_hex: str | None = None) -> dict[str, Any]:
    """CPUID's generation against the ISA flags (and gcc's ``-march=native``, when given).

    ``agrees`` is False when the flags show an extension the reported generation never had
    (``beyond``: the model number is not the real one) or lack one every part of it has
    (``hidden``: masked by the hypervisor). ``sentence`` says it in words; Synapse uses the flags.
    """
    flags = set(flags or [])
    by_flags = generation_from_flags(vendor, flags)
    expected = GENERATION_MARKERS.get(generation_name or "")
    table = {"GenuineIntel": INTEL_FIRST, "AuthenticAMD": AMD_FIRST}.get(vendor or "", {})
    out: dict[str, Any] = {"reported": generation_name, "model_hex": model_hex,
                           "flags_floor": (by_flags or {}).get("floor"), "flags_markers": (by_flags or {}).get("markers", []),
                           "gcc_march": march, "gcc_generation": GCC_MARCH.get(march or "", None) if march else None,
                           "beyond": [], "hidden": [], "agrees": True, "checked": False, "believed": generation_name,
                           "sentence": None}
    impossible = sorted(f for f in ("amx_tile", "avx512_fp16") if f in flags) if vendor == "AuthenticAMD" else []
    if expected is not None:
        out["checked"] = True
        present = {f for f in table if f in flags} | set(impossible)
        out["beyond"] = sorted(present - expected, key=lambda m: list(MARKER_NAMES).index(m))
        out["hidden"] = sorted(expected - present, key=lambda m: list(MARKER_NAMES).index(m))
    elif impossible:
        out["checked"] = True
        out["beyond"] = impossible
    out["agrees"] = not (out["beyond"] or out["hidden"])
    # gcc names by its own table (gcc 12 calls a Raptor Lake "alderlake"): only an ISA difference counts
    gcc_gen = out["gcc_generation"]
    gcc_differs = bool(gcc_gen and generation_name and gcc_gen != generation_name
                       and GENERATION_MARKERS.get(gcc_gen) != GENERATION_MARKERS.get(generation_name))
    out["gcc_differs"] = gcc_differs
    if out["agrees"] and not gcc_differs:
        return out
    who = "the hypervisor reports" if virtual else "CPUID reports"
    ident = f"model {model_hex} ({generation_name})" if model_hex else (generation_name or "an unknown model")
    parts = [f"{who} {ident}"]
    floor = out["flags_floor"]
    if out["beyond"]:
        parts.append(f"the flags show {floor} or newer ({_names(out['beyond'])}, which no {generation_name} has)")
    elif out["hidden"]:
        shown = (f"the flags show {floor} or newer and lack " if floor and floor != generation_name
                 else "the flags lack ")
        parts.append(f"{shown}{_names(out['hidden'])}, which every {generation_name} has"
                     + (" (hidden by the hypervisor, or too new for an old kernel to list)" if virtual else
                        " (switched off in firmware, or too new for an old kernel to list)"))
    elif floor:
        parts.append(f"the flags show {floor} or newer")
    if march:
        parts.append(f"gcc resolves -march=native to {march}")
    parts.append("Synapse uses the flags")
    out["sentence"] = "; ".join(parts)
    if out["beyond"]:
        out["believed"] = f"{floor} or newer (by its flags)"
    elif out["hidden"]:
        out["believed"] = (f"{floor or 'no vector extension'}{' or newer' if floor else ''} by its flags, "
                           f"without {_names(out['hidden'])}")
    return out


# ---- parse --------------------------------------------------------------------------------

def _int(text: Any, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        s = str(text).strip()
        return int(s, 16) if s.lower().startswith("0x") else int(s, base)
    except ValueError:
        return None


def isa_summary(flags: set[str]) -> dict[str, Any]:
    """The ISA extensions llama.cpp's CPU backend cares about."""
    return {
        "sse4_2": "sse4_2" in flags,
        "avx": "avx" in flags,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
        "f16c": "f16c" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "avx_vnni": "avx_vnni" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": sorted(f for f in flags if f.startswith("amx")),
    }


def _caches(lscpu: Mapping[str, str], sysfs: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """L1d/L1i/L2/L3: per-instance size (cpu0's sysfs where read, else lscpu) and lscpu's total."""
    caches: dict[str, dict[str, Any]] = {}
    # cpu0's cache/indexN/{level,type,size}
    idx: dict[str, dict[str, str]] = {}
    for path, value in sysfs.items():
        parts = path.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2].startswith("index"):
            idx.setdefault(parts[-2], {})[parts[-1]] = value.strip()
    for d in idx.values():
        level, ctype = d.get("level"), d.get("type", "")
        if not level:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(ctype, "")
        caches.setdefault(name, {})["per_instance_bytes"] = parse_size(d.get("size"))
    import re

    for name in ("L1d", "L1i", "L2", "L3", "L4"):
        value = lscpu.get(f"{name} cache")
        if not value:
            continue
        entry = caches.setdefault(name, {})
        m = re.search(r"\((\d+) instances?\)", value)
        size = parse_size(value)
        if m:  # util-linux >= 2.34: the sum over all instances
            entry["total_bytes"] = size
            entry["instances"] = int(m.group(1))
            # on hybrid parts P and E cores differ: the quotient is only an average
            entry["avg_per_instance_bytes"] = size // int(m.group(1)) if size else None
        else:  # older lscpu prints one instance's size
            entry.setdefault("per_instance_bytes", size)
        entry["lscpu"] = value
    return dict(sorted(caches.items()))


def _hybrid(o: Mapping[str, str], rows: list[dict], vendor: str | None, model: int | None,
            logical: int | None, cores: int | None, tpc: int | None) -> dict[str, Any] | None:
    """P/E split where the kernel shows it; else from per-core thread counts; else inferred."""
    core_of = {r["cpu"]: (r.get("socket"), r.get("core")) for r in rows if r.get("cpu") is not None}

    def split(p_cpus: list[int], e_cpus: list[int], source: str) -> dict[str, Any]:
        def ncores(cpus: list[int]) -> int:
            if core_of and all(c in core_of for c in cpus):
                return len({core_of[c] for c in cpus})
            return len(cpus)
        return {"p_cpus": format_cpulist(p_cpus), "e_cpus": format_cpulist(e_cpus),
                "p_cores": ncores(p_cpus), "e_cores": ncores(e_cpus), "source": source}

    p = parse_cpulist(o.get("cpu_core"))
    e = parse_cpulist(o.get("cpu_atom"))
    if p and e:
        return split(p, e, "kernel: /sys/devices/cpu_core/cpus and /sys/devices/cpu_atom/cpus")
    caps: dict[int, int] = {}
    for path, value in grep_lines(o.get("cpu_capacity")).items():
        name = path.rstrip("/").split("/")[-2]
        if name.startswith("cpu") and name[3:].isdigit() and value.strip().isdigit():
            caps[int(name[3:])] = int(value)
    if len(set(caps.values())) > 1:
        top = max(caps.values())
        return split([c for c, v in caps.items() if v == top], [c for c, v in caps.items() if v != top],
                     "kernel: per-CPU cpu_capacity")
    if vendor != "GenuineIntel":
        return None
    if rows and core_of:
        per_core = Counter(core_of.values())
        counts = set(per_core.values())
        if len(counts) > 1:
            smt = {k for k, n in per_core.items() if n > 1}
            return split([c for c, k in core_of.items() if k in smt], [c for c, k in core_of.items() if k not in smt],
                         "lscpu -p: cores with two threads are P cores, single-thread cores E cores")
    if logical and cores and tpc == 2 and logical != cores * tpc and cores < logical < 2 * cores:
        p_cores = logical - cores
        return {"p_cpus": None, "e_cpus": None, "p_cores": p_cores, "e_cores": cores - p_cores,
                "source": "inferred: CPU(s) < cores x threads per core (SMT on P cores only)"}
    return None


def parse(o: Mapping[str, str]) -> dict[str, Any]:
    ls = parse_lscpu(o.get("lscpu"))
    procs = parse_cpuinfo(o.get("cpuinfo"))
    rows = parse_lscpu_p(o.get("lscpu_p"))
    first = procs[0] if procs else {}

    vendor = ls.get("Vendor ID") or first.get("vendor_id")
    model_name = ls.get("Model name") or first.get("model name")
    family = _int(ls.get("CPU family") or first.get("cpu family"))
    model = _int(ls.get("Model") or first.get("model"))
    stepping = _int(ls.get("Stepping") or first.get("stepping"))

    flag_text = ls.get("Flags") or first.get("flags") or ""
    flags = set(flag_text.split())

    # logical CPUs
    if rows:
        logical = len(rows)
    elif procs:
        logical = len(procs)
    else:
        logical = _int(ls.get("CPU(s)"))
    # sockets and physical cores: unique (socket, core) pairs are the most direct count
    sockets = _int(ls.get("Socket(s)"))
    cores = None
    source = None
    if rows and all(r.get("core") is not None for r in rows):
        cores = len({(r.get("socket"), r.get("core")) for r in rows})
        sockets = len({r.get("socket") for r in rows}) or sockets
        source = "lscpu -p: unique (socket, core) pairs"
    elif procs and all("core id" in p for p in procs):
        cores = len({(p.get("physical id"), p.get("core id")) for p in procs})
        sockets = len({p.get("physical id") for p in procs}) or sockets
        source = "/proc/cpuinfo: unique (physical id, core id) pairs"
    else:
        cps = _int(ls.get("Core(s) per socket"))
        if cps is not None:
            cores = cps * (sockets or 1)
            source = "lscpu: Core(s) per socket x Socket(s)"
    tpc = _int(ls.get("Thread(s) per core"))
    if rows and cores:
        per_core = Counter((r.get("socket"), r.get("core")) for r in rows)
        tpc = max(per_core.values())
    elif tpc is None and logical and cores:
        tpc = max(1, round(logical / cores))

    hybrid = _hybrid(o, rows, vendor, model, logical, cores, tpc)
    gen = generation(vendor, family, model, stepping)
    return {
        "vendor": vendor,
        "model_name": model_name,
        "family": family,
        "model": model,
        "model_hex": f"0x{model:X}" if model is not None else None,
        "stepping": stepping,
        "generation": gen,
        "generation_check": generation_check(vendor, gen, flags, virtual=bool(ls.get("Hypervisor vendor")
                                                                              or "hypervisor" in flags),
                                             model_hex=f"0x{model:X}" if model is not None else None),
        "hybrid_capable_model": vendor == "GenuineIntel" and family == 6 and model in INTEL_HYBRID_MODELS,
        "sockets": sockets,
        "physical_cores": cores,
        "physical_cores_source": source,
        "logical_cpus": logical,
        "threads_per_core": tpc,
        "smt": bool(tpc and tpc > 1),
        "hybrid": hybrid,
        "isa": isa_summary(flags),
        "flags": sorted(flags),
        "caches": _caches(ls, grep_lines(o.get("cache"))),
        "hypervisor_vendor": ls.get("Hypervisor vendor"),
        "max_mhz": float(ls["CPU max MHz"]) if ls.get("CPU max MHz") else None,
    }


FACT = Fact(
    name="cpu",
    commands={
        "cpuinfo": ("cat", "/proc/cpuinfo"),
        "lscpu": ("lscpu", "-J"),
        "lscpu_p": ("lscpu", "-p=CPU,CORE,SOCKET,NODE"),
        "cpu_core": ("cat", "/sys/devices/cpu_core/cpus"),
        "cpu_atom": ("cat", "/sys/devices/cpu_atom/cpus"),
        "cpu_capacity": ("grep", "-r", "--include=cpu_capacity", ".", "/sys/devices/system/cpu"),
        "cache": ("grep", "-r", ".", "/sys/devices/system/cpu/cpu0/cache"),
    },
    parse=parse,
    optional=frozenset({"cpu_core", "cpu_atom", "cpu_capacity", "cache"}),
    fallbacks={"lscpu": ("lscpu",)},  # util-linux < 2.30 has no -J
)


# ---- small facts for one value -------------------------------------------------------------------
def parse_flags(o: Mapping[str, str]) -> list[str]:
    """/proc/cpuinfo -> the ``flags`` of the first processor (what CPUID advertises)."""
    blocks = parse_cpuinfo(o.get("cpuinfo"))
    return blocks[0].get("flags", "").split() if blocks else []


#: the ISA flags of /proc/cpuinfo, without the rest of the survey
FLAGS = Fact(name="cpu flags", commands={"cpuinfo": ("cat", "/proc/cpuinfo")}, parse=parse_flags,
             optional=frozenset({"cpuinfo"}))


def parse_count(text: str | None) -> int | None:
    """``nproc`` -> 2; None when it printed no number."""
    t = (text or "").strip()
    return int(t) if t.isdigit() else None


#: CPUs this process may run on (``nproc``: affinity and cgroup cpusets count): the one CPU count
#: thread counts and build jobs start from (:mod:`aios_lib.runtime.cpus`)
USABLE_CPUS = Fact(name="usable cpus", commands={"nproc": ("nproc",)},
                   parse=lambda o: parse_count(o.get("nproc")), optional=frozenset({"nproc"}))

#: CPUs installed (``nproc --all``): the verification's smoke run uses every one of them
ALL_CPUS = Fact(name="all cpus", commands={"nproc": ("nproc", "--all")},
                parse=lambda o: parse_count(o.get("nproc")), optional=frozenset({"nproc"}))
