"""Phase 1 (research & prep): the blueprint's questions answered from a survey of the machine.

Every function here is pure: it takes the dict that :func:`aios_lib.facts.survey.survey` returns
(or the copy recorded in results.json) and returns small objects that display themselves in a
notebook (Markdown prose) and turn into tables (pandas) and JSON (``to_dict``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Average bits per weight of llama.cpp K-quants on llama-style models (llama.cpp's quantize
#: table for LLaMA 7B: Q4_K_M 4.85 bpw, Q5_K_M 5.69 bpw). Other architectures land close to these.
BITS_PER_WEIGHT = {"Q4_K_M": 4.85, "Q5_K_M": 5.69}
#: Memory kept for the OS: a minimal systemd system with sshd uses well under 1 GiB; the rest is
#: headroom for page cache, the journal, a shell and the benchmark tools.
OS_RESERVE_GIB = 2.0
#: KV cache plus llama.cpp compute buffers: a 4096-token f16 KV cache of a GQA model with 8 KV heads
#: of 128 dims costs 2 x layers x 4096 x 1024 x 2 bytes = 0.5 GiB at 32 layers, 1 GiB at 64 layers;
#: compute buffers add a few hundred MiB. Longer contexts need proportionally more.
KV_RESERVE_GIB = 1.5
#: common model sizes (billions of parameters) for "about N B" answers
COMMON_SIZES_B = (0.5, 1, 1.5, 3, 4, 7, 8, 12, 13, 14, 22, 24, 27, 32, 34, 70, 72, 123, 405)

GIB = 1024**3


@dataclass
class Answer:
    """One question of the blueprint, its short answer, and why."""

    question: str
    answer: str
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        return f"**{self.question}** {self.answer}\n\n{self.detail}".strip()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Answers:
    items: list[Answer]

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, key: str) -> Answer:
        for a in self.items:
            if a.facts.get("key") == key:
                return a
        raise KeyError(key)

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"question": a.question, "answer": a.answer} for a in self.items])

    def to_dict(self) -> dict[str, Any]:
        return {a.facts.get("key", a.question): a.to_dict() for a in self.items}

    def _repr_markdown_(self) -> str:
        return "\n\n".join(a._repr_markdown_() for a in self.items)


# ---- CPU --------------------------------------------------------------------------------

def _generation_check(s: Mapping[str, Any], native: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The survey's generation check, redone with gcc's ``-march=native`` when it is known (a record
    made before the check existed is checked here from its flags)."""
    from .cpu import generation_check

    c = s["cpu"]
    march = (native or {}).get("march")
    virtual = bool(s.get("virt", {}).get("virtual") or c.get("hypervisor_vendor") or "hypervisor" in (c.get("flags") or []))
    return generation_check(c.get("vendor"), c.get("generation"), c.get("flags") or [], march=march,
                            virtual=virtual, model_hex=c.get("model_hex"))


def cpu_generation(s: Mapping[str, Any], native: Mapping[str, Any] | None = None) -> Answer:
    """The generation from CPUID, cross-checked with the ISA flags and (``native``:
    ``NativeTarget.to_dict()``) gcc's ``-march=native``; when they disagree, the answer is what the
    flags show and the detail says what each source said."""
    c = s["cpu"]
    gen = c.get("generation")
    check = _generation_check(s, native)
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(c.get("vendor"), c.get("vendor") or "unknown vendor")
    ident = f"family {c.get('family')}, model {c.get('model')} ({c.get('model_hex')}), stepping {c.get('stepping')}"
    if not check["agrees"]:
        answer = f"{vendor} {check['believed']}: CPUID says {gen}, the flags disagree — {c.get('model_name')}."
    elif gen:
        answer = f"{vendor} {gen} — {c.get('model_name')}."
    else:
        answer = f"{c.get('model_name')} ({vendor}); this family/model is not in Synapse's table."
    detail = (f"The generation comes from the CPUID signature ({ident}), not from the marketing name, "
              "which a hypervisor may hide (\"Intel(R) Xeon(R) Processor\"), and is checked against the ISA "
              "flags, which are what code may use.")
    if check["sentence"]:
        detail += f" **Disagreement: {check['sentence']}.**"
        if check["beyond"]:
            detail += (" A hypervisor may report another model number than its host's; the extensions it passes "
                       "through are the ones that count.")
        elif check["hidden"]:
            detail += (" The hypervisor masks extensions the host has: builds and kernels here can use only what the "
                       "flags show.")
    elif check["checked"]:
        detail += f" The flags agree ({check['flags_floor'] or 'no vector extension'} or newer)."
    if s.get("virt", {}).get("virtual"):
        detail += (f" This is a {s['virt']['summary']}: the flags below are what the hypervisor passes through, "
                   "and a `-march=native` build targets this virtual CPU.")
    return Answer("Which CPU generation?", answer, detail,
                  {"key": "cpu_generation", "generation": gen, "vendor": c.get("vendor"), "model_name": c.get("model_name"),
                   "family": c.get("family"), "model": c.get("model"), "stepping": c.get("stepping"),
                   "check": check})


def isa_support(s: Mapping[str, Any]) -> Answer:
    isa = s["cpu"]["isa"]
    avx2 = bool(isa.get("avx2") and isa.get("fma") and isa.get("f16c"))
    avx512 = list(isa.get("avx512") or [])
    vnni = bool(isa.get("avx_vnni") or isa.get("avx512_vnni"))
    amx = list(isa.get("amx") or [])
    have = []
    have.append("AVX2+FMA+F16C" if avx2 else ("AVX2 (without FMA/F16C)" if isa.get("avx2") else "no AVX2"))
    have.append(f"AVX-512 ({len(avx512)} subsets)" if avx512 else "no AVX-512")
    have.append("VNNI (" + ", ".join(x for x, on in (("AVX-VNNI", isa.get("avx_vnni")),
                                                      ("AVX512-VNNI", isa.get("avx512_vnni"))) if on) + ")"
                if vnni else "no VNNI")
    have.append(f"AMX ({', '.join(amx)})" if amx else "no AMX")
    lines = []
    if avx2:
        lines.append("AVX2/FMA/F16C is the baseline the blueprint assumes: ggml's CPU backend has AVX2 kernels for "
                     "every quant type, so Q4_K_M/Q5_K_M run at full speed here.")
    elif isa.get("avx"):
        lines.append("Without AVX2 ggml falls back to AVX/SSE kernels, several times slower; the blueprint's "
                     "premise (an AVX2 i7) does not hold for this machine.")
    else:
        lines.append("Without AVX ggml runs its scalar/SSE code: usable only for tiny models.")
    if avx512:
        lines.append("AVX-512 is present (" + ", ".join(avx512) + "): ggml uses 512-bit kernels, which mostly speed up "
                     "prompt processing (compute-bound); token generation stays memory-bandwidth-bound.")
    else:
        lines.append("No AVX-512, as the blueprint expected for a desktop i7: Skylake to Comet Lake never had it, "
                     "and Alder Lake and later ship it fused off; only 11th-gen (Ice/Tiger/Rocket Lake) i7s have it.")
    if isa.get("avx_vnni") and not isa.get("avx512_vnni"):
        lines.append("AVX-VNNI (256-bit int8 dot products, Alder Lake and later) is used by ggml's quantized "
                     "dot products when built with `-march=native`.")
    if isa.get("avx512_vnni"):
        lines.append("AVX512-VNNI speeds up ggml's int8 dot products (Q8 activations against quantized weights).")
    if amx:
        lines.append("AMX tiles are present: ggml's AMX path accelerates prompt processing for some quant types "
                     "(Q4_0/Q4_1/Q8_0 and friends) when built natively.")
    lines.append("The blueprint's `make LLAMA_AVX2=1 LLAMA_FMA=1 LLAMA_F16C=1` no longer exists (llama.cpp dropped "
                 "its Makefile); Phase 4 builds with CMake and `GGML_NATIVE=ON`, i.e. `-march=native`, which enables "
                 "every extension listed here.")
    return Answer("AVX2 / AVX-512 / VNNI / AMX?", "; ".join(have) + ".", " ".join(lines),
                  {"key": "isa", "avx2_fma_f16c": avx2, "avx2": bool(isa.get("avx2")), "avx512": avx512,
                   "avx_vnni": bool(isa.get("avx_vnni")), "avx512_vnni": bool(isa.get("avx512_vnni")), "amx": amx})


def thread_start(s: Mapping[str, Any]) -> Answer:
    c = s["cpu"]
    phys, logical = c.get("physical_cores"), c.get("logical_cpus")
    hy = c.get("hybrid")
    # half the cores (where bandwidth often saturates), the P cores, all cores, all logical CPUs
    candidates = sorted({n for n in (max(1, (phys or 0) // 2), (hy or {}).get("p_cores"), phys, logical) if n})
    start = phys or logical
    answer = f"start at {start} threads (the physical cores)"
    detail = (f"{c.get('sockets')} socket(s), {phys} physical cores, {logical} logical CPUs "
              f"({c.get('threads_per_core')} thread(s) per core; SMT {'on' if c.get('smt') else 'off or absent'}). "
              "The blueprint's rule `N_THREADS = physical cores` is a starting point, not an answer: token "
              "generation is memory-bound and often peaks below the core count, so Phase 5 measures "
              f"{', '.join(map(str, candidates))} threads and keeps the fastest.")
    if hy:
        answer += f"; hybrid: {hy['p_cores']} P + {hy['e_cores']} E cores"
        detail += (f" This is a hybrid CPU ({hy['p_cores']} P cores, {hy['e_cores']} E cores; {hy['source']}). "
                   "ggml splits work evenly across threads, so slow E cores can hold back fast P cores: "
                   "P cores only (pinned) is a candidate of its own.")
    return Answer("How many threads to start with?", answer + ".", detail,
                  {"key": "threads", "start": start, "candidates": candidates, "physical_cores": phys,
                   "logical_cpus": logical, "hybrid": hy})


# ---- memory -----------------------------------------------------------------------------

def size_class(params_b: float) -> float | None:
    """The largest common model size (in B parameters) not above ``params_b``."""
    fits = [x for x in COMMON_SIZES_B if x <= params_b]
    return fits[-1] if fits else None


@dataclass
class ModelFit:
    total_bytes: int
    os_reserve_bytes: int
    kv_reserve_bytes: int
    rows: list[dict[str, Any]]

    @property
    def budget_bytes(self) -> int:
        return max(0, self.total_bytes - self.os_reserve_bytes - self.kv_reserve_bytes)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def _repr_markdown_(self) -> str:
        lines = [f"RAM {self.total_bytes / GIB:.1f} GiB − OS {self.os_reserve_bytes / GIB:.1f} GiB − KV cache and "
                 f"buffers {self.kv_reserve_bytes / GIB:.1f} GiB = **{self.budget_bytes / GIB:.1f} GiB for the model "
                 "file**.", ""]
        lines += ["| quant | bits/weight | largest file | max parameters | common size that fits |",
                  "|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['quant']} | {r['bits_per_weight']} | {r['max_file_gib']} GiB | "
                         f"{r['max_params_b']} B | {r['size_class']} |")
        return "\n".join(lines)


def model_fit(s: Mapping[str, Any], os_reserve_gib: float = OS_RESERVE_GIB,
              kv_reserve_gib: float = KV_RESERVE_GIB) -> ModelFit:
    total = int(s["memory"].get("total_bytes") or 0)
    fit = ModelFit(total, int(os_reserve_gib * GIB), int(kv_reserve_gib * GIB), [])
    budget = fit.budget_bytes
    for quant, bpw in BITS_PER_WEIGHT.items():
        params_b = budget * 8 / bpw / 1e9
        cls = size_class(params_b)
        fit.rows.append({"quant": quant, "bits_per_weight": bpw, "max_file_gib": round(budget / GIB, 1),
                         "max_params_b": round(params_b, 1),
                         "size_class": f"about {cls:g}B" if cls else "none (under 0.5B)"})
    return fit


def memory_answer(s: Mapping[str, Any], os_reserve_gib: float = OS_RESERVE_GIB,
                  kv_reserve_gib: float = KV_RESERVE_GIB) -> Answer:
    m = s["memory"]
    fit = model_fit(s, os_reserve_gib, kv_reserve_gib)
    q4, q5 = fit.rows[0], fit.rows[1]
    answer = (f"{(m.get('total_bytes') or 0) / GIB:.1f} GiB RAM: at Q4_K_M up to ~{q4['max_params_b']}B parameters "
              f"({q4['size_class']}), at Q5_K_M up to ~{q5['max_params_b']}B ({q5['size_class']}).")
    speed = f" Memory runs at {m['speed_mts']} MT/s ({', '.join(m['module_types'])})." if m.get("speed_mts") else \
        " dmidecode reported no memory modules here (normal in VMs and containers), so the memory speed is unknown."
    detail = (f"Reserved: {os_reserve_gib:g} GiB for the OS and {kv_reserve_gib:g} GiB for the KV cache and compute "
              "buffers (a 4096-token context of a GQA model up to ~34B; longer contexts need more). "
              "The model must fit in RAM: llama.cpp mmaps the file, and zram does not help (mapped file pages are "
              "dropped and re-read from disk, not compressed), so a model that does not fit re-reads the disk on "
              "every token. Fitting is not speed: token generation reads every weight once per token, so "
              "tokens/s is roughly memory bandwidth ÷ file size, and the largest model that fits is the slowest." + speed)
    return Answer("How much memory, and which GGUF fits?", answer, detail,
                  {"key": "memory", "total_bytes": m.get("total_bytes"), "available_bytes": m.get("available_bytes"),
                   "os_reserve_gib": os_reserve_gib, "kv_reserve_gib": kv_reserve_gib,
                   "model_budget_bytes": fit.budget_bytes, "fit": fit.rows, "speed_mts": m.get("speed_mts")})


# ---- boot and disk -----------------------------------------------------------------------

def boot_answer(s: Mapping[str, Any]) -> Answer:
    fw = s["firmware"]
    # a record made before the firmware fact knew direct kernel boot has no "kind"
    kind = fw.get("kind") or ("uefi" if fw.get("uefi") else "bios")
    if kind == "uefi":
        ans = "UEFI: systemd-boot, as the blueprint recommends."
        detail = ("/sys/firmware/efi exists, so the machine booted through UEFI. systemd-boot needs an EFI "
                  "system partition (FAT32, the blueprint's 512 MiB /boot) and is configured with `bootctl install`.")
        loader = "systemd-boot"
    elif kind == "direct":
        ans = ("No firmware: the hypervisor started the kernel directly (no UEFI, no BIOS, no boot loader); "
               "this machine cannot say which boot loader an installed system needs.")
        detail = (f"Why: {fw.get('why')}. A virtual machine of this kind (Firecracker, cloud-hypervisor, QEMU "
                  "microvm) never reads a boot loader from its disk, so neither systemd-boot nor GRUB would run "
                  "here. Synapse's images boot through UEFI with systemd-boot (phase 02 checks them in QEMU with "
                  "OVMF); answer this question on the machine that will be installed.")
        loader = None
    elif kind == "unknown":
        ans = "Unknown: the survey could not read /sys/firmware or the kernel command line."
        detail = ("Run the survey on the machine itself (not from a copied `lscpu` output); /sys/firmware/efi "
                  "decides between UEFI (systemd-boot) and legacy BIOS (GRUB).")
        loader = None
    else:
        ans = "Legacy BIOS: GRUB (systemd-boot cannot boot without UEFI)."
        detail = ("/sys/firmware/efi does not exist, so this system booted through legacy BIOS (or a firmware that "
                  "hides EFI from the guest). systemd-boot is a UEFI application; on this machine the install "
                  "needs GRUB (`grub-install --target=i386-pc`, with a BIOS boot partition on GPT). A real target "
                  "may differ: answer this on the machine that will be installed.")
        if fw.get("why"):
            detail += f" ({fw['why']}.)"
        loader = "grub"
    return Answer("UEFI or BIOS, and which boot loader?", ans, detail,
                  {"key": "boot", "uefi": kind == "uefi", "firmware": kind, "bootloader": loader})


def install_target(s: Mapping[str, Any]) -> Answer:
    """A suggestion only: the largest whole disk that is not removable, not virtual and not in use."""
    d = s["disks"]
    rows = d.get("disks", [])
    safe, why_not = [], {}
    for disk in rows:
        reasons = []
        if disk.get("type") != "disk":
            reasons.append(f"type {disk.get('type')}")
        if disk.get("virtual_device"):
            reasons.append("a virtual device (zram/loop/ram)")
        if disk.get("removable"):
            reasons.append("removable")
        if not disk.get("size_bytes"):
            reasons.append("size 0")
        if disk.get("holds_root"):
            reasons.append("holds the running root filesystem /")
        elif disk.get("mountpoints"):
            reasons.append("mounted at " + ", ".join(disk["mountpoints"]))
        if reasons:
            why_not[disk["path"]] = "; ".join(reasons)
        else:
            safe.append(disk)
    safe.sort(key=lambda x: x.get("size_bytes") or 0, reverse=True)
    excluded = "; ".join(f"`{p}`: {r}" for p, r in why_not.items()) or "none"
    if safe:
        t = safe[0]
        ans = (f"suggest `{t['path']}` ({(t['size_bytes'] or 0) / GIB:.0f} GiB"
               f"{', ' + t['model'] if t.get('model') else ''}{', ' + t['transport'] if t.get('transport') else ''}"
               f"{', SSD' if t.get('rotational') is False else ''}) — a suggestion only, nothing is written.")
        detail = ("It is the largest whole disk that is not removable, not virtual, not mounted and does not hold /. "
                  "To install on it, set `target.kind: disk`, `target.device` to its /dev/disk/by-id path and "
                  "`target.confirm` to the same path; until then every destructive step is refused. "
                  f"Excluded: {excluded}.")
        suggestion = t["path"]
    else:
        ans = "none is safe on this machine: every disk is in use, removable or virtual."
        detail = ("Synapse will not suggest a disk that holds the running system. Build and test the install on a "
                  "disk image instead (`target.kind: image`), or run this survey on the machine to be installed "
                  f"with a spare disk attached. Excluded: {excluded}.")
        suggestion = None
    if not d.get("root_disk"):
        detail += " The disk holding / could not be identified (a container?), so every mounted disk was excluded."
    return Answer("Which disk would be the install target?", ans, detail,
                  {"key": "target_disk", "suggestion": suggestion, "excluded": why_not, "root_disk": d.get("root_disk")})


def answer_all(s: Mapping[str, Any], os_reserve_gib: float = OS_RESERVE_GIB,
               kv_reserve_gib: float = KV_RESERVE_GIB, native: Mapping[str, Any] | None = None) -> Answers:
    return Answers([cpu_generation(s, native), isa_support(s), thread_start(s),
                    memory_answer(s, os_reserve_gib, kv_reserve_gib), boot_answer(s), install_target(s)])


# ---- survey tables -------------------------------------------------------------------------

def _gib(n) -> str:
    return "—" if not n else f"{n / GIB:.1f} GiB"


def cpu_table(s: Mapping[str, Any], native: Mapping[str, Any] | None = None):
    import pandas as pd

    c = s["cpu"]
    check = _generation_check(s, native)
    hy = c.get("hybrid")
    isa = c["isa"]
    rows = [
        ("model name", c.get("model_name")),
        ("vendor", c.get("vendor")),
        ("family / model / stepping", f"{c.get('family')} / {c.get('model')} ({c.get('model_hex')}) / {c.get('stepping')}"),
        ("generation (CPUID)", c.get("generation") or "unknown"),
        ("generation (ISA flags)", f"{check['flags_floor']} or newer" if check["flags_floor"] else "—"),
        ("gcc -march=native", check["gcc_march"] or "—"),
        ("generation check", check["sentence"] or ("agrees" if check["checked"] else "not checked (no table)")),
        ("sockets", c.get("sockets")),
        ("physical cores", f"{c.get('physical_cores')} ({c.get('physical_cores_source')})"),
        ("logical CPUs", c.get("logical_cpus")),
        ("threads per core", c.get("threads_per_core")),
        ("hybrid P/E", f"{hy['p_cores']} P + {hy['e_cores']} E ({hy['source']})" if hy else "no"),
        ("AVX / AVX2 / FMA / F16C", " / ".join("yes" if isa.get(k) else "no" for k in ("avx", "avx2", "fma", "f16c"))),
        ("AVX-512", ", ".join(isa.get("avx512") or []) or "none"),
        ("AVX-VNNI", "yes" if isa.get("avx_vnni") else "no"),
        ("AMX", ", ".join(isa.get("amx") or []) or "none"),
    ]
    for name, cache in (c.get("caches") or {}).items():
        per = cache.get("per_instance_bytes")
        rows.append((f"{name} cache", cache.get("lscpu") or (f"{per // 1024} KiB" if per else "?")))
    rows.append(("hypervisor", c.get("hypervisor_vendor") or "none reported"))
    return pd.DataFrame(rows, columns=["property", "value"]).set_index("property")


def _numa_memory(n: Mapping[str, Any]) -> str:
    chk = n.get("memory") or {}
    if chk.get("agrees") is None:
        return "not checked (per-node memory not read)"
    if chk["agrees"]:
        return f"agrees: the nodes hold {_gib(chk['sum_bytes'])} of {_gib(chk['total_bytes'])}"
    return "MISMATCH: " + chk["sentence"]


def system_table(s: Mapping[str, Any]):
    import pandas as pd

    m, k, fw, v, n, g = s["memory"], s["kernel"], s["firmware"], s["virt"], s["numa"], s["gpu"]
    rows = [
        ("memory total", _gib(m.get("total_bytes"))),
        ("memory available", _gib(m.get("available_bytes"))),
        ("swap", _gib(m.get("swap_total_bytes"))),
        ("memory speed", f"{m['speed_mts']} MT/s" if m.get("speed_mts") else "unknown (no dmidecode data)"),
        ("hugepages (static)", f"{m.get('hugepages_total')} × {(m.get('hugepage_size_bytes') or 0) // 1024} KiB"),
        ("NUMA nodes", f"{n.get('count')} (" + "; ".join(
            f"node{x['node']}: CPUs {x['cpus']}" + (f", {_gib(x['mem_total_bytes'])}" if x.get("mem_total_bytes") else "")
            for x in n.get("nodes", [])) + ")"),
        ("NUMA memory check", _numa_memory(n)),
        ("firmware", fw.get("boot_mode")),
        ("firmware: why", fw.get("why") or "—"),
        ("virtualization", v.get("summary")),
        ("kernel", f"{k.get('release')} {k.get('version') or ''}".strip()),
        ("THP enabled / defrag", f"{k.get('thp_enabled')} / {k.get('thp_defrag')}"),
        ("cpufreq governor", k.get("governor") or "none exposed"),
        ("mitigations= on cmdline", k.get("mitigations_arg") or "not set (kernel default)"),
        ("GPUs", ", ".join(f"{x['vendor']} {x['device']}" for x in g.get("gpus", [])) or "none"),
    ]
    return pd.DataFrame(rows, columns=["property", "value"]).set_index("property")


def disks_table(s: Mapping[str, Any]):
    import pandas as pd

    rows = [{"path": d["path"], "model": d.get("model") or "", "size": _gib(d.get("size_bytes")),
             "rotational": d.get("rotational"), "transport": d.get("transport") or "", "removable": d.get("removable"),
             "mounted": ", ".join(d.get("mountpoints") or []), "holds /": d.get("holds_root")}
            for d in s["disks"].get("disks", [])]
    return pd.DataFrame(rows, columns=["path", "model", "size", "rotational", "transport", "removable", "mounted",
                                       "holds /"])


def vulnerabilities_table(s: Mapping[str, Any]):
    import pandas as pd

    from .kernel import vulnerability_status

    rows = [{"vulnerability": k, "status": vulnerability_status(v), "kernel says": v}
            for k, v in (s["kernel"].get("vulnerabilities") or {}).items()]
    return pd.DataFrame(rows, columns=["vulnerability", "status", "kernel says"])


def recorded_summary(s: Mapping[str, Any]) -> dict[str, Any]:
    """The handful of numbers later phases read (``recorded("01", "summary")``)."""
    c, m = s["cpu"], s["memory"]
    return {"physical_cores": c.get("physical_cores"), "logical_cpus": c.get("logical_cpus"),
            "p_cores": (c.get("hybrid") or {}).get("p_cores"), "p_cpus": (c.get("hybrid") or {}).get("p_cpus"),
            "threads_per_core": c.get("threads_per_core"), "mem_total_bytes": m.get("total_bytes"),
            "avx2": c["isa"].get("avx2"), "avx512": bool(c["isa"].get("avx512")), "uefi": s["firmware"].get("uefi"),
            "virtual": s["virt"].get("virtual"), "model_name": c.get("model_name"),
            # what Synapse believes: CPUID's name, or what the flags show where the two disagree
            "generation": (c.get("generation_check") or {}).get("believed", c.get("generation")),
            "generation_cpuid": c.get("generation")}


def summary_table(s: Mapping[str, Any]) -> "Any":
    """:func:`recorded_summary` as a table a person reads: the keys as recorded, memory in GiB
    beside the byte count that later phases read."""
    import pandas as pd

    shown = recorded_summary(s)
    n = shown.get("mem_total_bytes")
    if n:
        shown["mem_total_bytes"] = f"{_gib(n)} ({n:,} bytes)"
    return pd.Series(shown, name="recorded as 01/summary", dtype=object).to_frame()


def survey_commands(history) -> "Any":
    """The survey's commands and what each gave (rows of the runner's history), as a table."""
    import pandas as pd

    rows = [{"command": r.cmdline, "rc": r.rc, "lines of output": len((r.stdout or "").splitlines()),
             "note": "" if r.rc == 0 else ("not installed" if r.rc == 127 else "absent or not readable here")}
            for r in history]
    return pd.DataFrame(rows, columns=["command", "rc", "lines of output", "note"])


# ---- advertised, enabled, compiled, verified -----------------------------------------------

#: extension -> /proc/cpuinfo flags, the XCR0 state it needs, gcc's name, ggml's feature name
ISA_LAYERS = [
    ("AVX2", ("avx2",), "AVX", "avx2", "AVX2"),
    ("FMA", ("fma",), "AVX", "fma", "FMA"),
    ("F16C", ("f16c",), "AVX", "f16c", "F16C"),
    ("AVX-VNNI", ("avx_vnni",), "AVX", "avxvnni", "AVX_VNNI"),
    ("AVX-512", ("avx512f",), "AVX-512", "avx512f", "AVX512"),
    ("AVX512-VNNI", ("avx512_vnni",), "AVX-512", "avx512vnni", "AVX512_VNNI"),
    ("AVX512-BF16", ("avx512_bf16",), "AVX-512", "avx512bf16", "AVX512_BF16"),
    ("AVX512-FP16", ("avx512_fp16",), "AVX-512", "avx512fp16", None),
    ("AMX", ("amx_tile", "amx_int8"), "AMX", "amx-int8", "AMX_INT8"),
]


def _yn(v) -> str:
    return "?" if v is None else ("yes" if v else "no")


def isa_layers(cpu: Mapping[str, Any], xstate: Mapping[str, Any] | None = None,
               native: Mapping[str, Any] | None = None, working: Mapping[str, Any] | None = None):
    """One row per extension llama.cpp uses: advertised by CPUID, enabled by the kernel, enabled by
    gcc's ``-march=native``, compiled into the build Synapse uses, and why it is on or off.

    Takes recorded dicts (survey ``cpu`` and ``xstate``, ``NativeTarget.to_dict()``,
    ``WorkingBuild.to_dict()``), so a record re-renders it without the machine."""
    import pandas as pd

    flags = set(cpu.get("flags") or [])
    enabled = (xstate or {}).get("enabled") or {}
    gcc_on = set((native or {}).get("enabled") or []) if native else None
    used = working["build"] if working else None
    attempts = (working or {}).get("attempts") or []
    first = attempts[0] if attempts else None
    crash = ((first or {}).get("verification") or {}).get("crash") if first else None
    patched = {p["name"] for p in (used or {}).get("patches") or []}
    rows = []
    for name, cflags, state, gcc, feat in ISA_LAYERS:
        adv = all(f in flags for f in cflags)
        en = enabled.get(state)
        if name == "AMX" and en and xstate:
            en = en and xstate.get("amx_permission") == "ok" and xstate.get("amx_tile_run") == "ok"
        g = (gcc in gcc_on) if gcc_on is not None else None
        in_build = (feat in (used.get("features") or [])) if (used and feat) else None
        in_first = (feat in ((first or {}).get("build", {}).get("features") or [])) if (first and feat) else None
        if not adv:
            why = "not advertised by this CPU"
        elif en is False:
            why = ("advertised, but the kernel does not enable its register state (XCR0)" if name != "AMX" else
                   "advertised, but the kernel refuses the AMX permission or a tile multiply fails")
        elif g is False:
            why = "the compiler does not enable it with -march=native"
        elif used is None:
            why = "advertised and enabled; phase 04 builds and verifies" if not working else "planned"
        elif in_build:
            why = "used by the verified build" + (f" (with the pinned patch {', '.join(sorted(patched))})"
                                                  if patched and name == "AMX" else "")
        elif in_first and crash and crash.get("extension") == name:
            why = f"switched off: the build with it died ({crash.get('signal')} in {crash.get('function')})"
        elif in_first:
            why = "switched off in the build Synapse uses (see the attempts above)"
        elif feat is None:
            why = "ggml reports no feature for it (the compiler may still use it)"
        else:
            why = "not in the build"
        rows.append({"extension": name, "advertised (cpuinfo)": _yn(adv),
                     "enabled by the kernel": _yn(en) if adv else "—",
                     "gcc -march=native": _yn(g) if gcc_on is not None else "—",
                     "in the build used": _yn(in_build) if used is not None and feat else "—",
                     "why": why})
    return pd.DataFrame(rows)
