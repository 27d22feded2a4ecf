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
    return {
        "vendor": vendor,
        "model_name": model_name,
        "family": family,
        "model": model,
        "model_hex": f"0x{model:X}" if model is not None else None,
        "stepping": stepping,
        "generation": generation(vendor, family, model, stepping),
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
