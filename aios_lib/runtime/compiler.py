"""Blueprint 2.2, compiler strategy: what ``-march=native`` means on this CPU, and makepkg.conf.

``gcc -march=native -Q --help=target`` lists every target option with the value ``-march=native``
gives it; ``gcc -march=native -E -v -`` shows the full ``cc1`` line: the ``-march=`` gcc picked
for this CPU plus one ``-m``/``-mno-`` per ISA extension. Both are facts
(:mod:`aios_lib.facts.toolchain`), tested on captured output in ``tests/fixtures/llama/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..facts import cpu as cpu_facts, gather, toolchain

#: ISA extensions that matter to llama.cpp's CPU kernels, in the order people read them.
KEY_ISA = ["sse4.2", "avx", "avx2", "fma", "f16c", "bmi2", "avxvnni", "avx512f", "avx512bw", "avx512vl",
           "avx512dq", "avx512vnni", "avx512vbmi", "avx512bf16", "avx512fp16", "amx-tile", "amx-int8",
           "amx-bf16"]

#: /proc/cpuinfo flag names for the same extensions (where they differ from gcc's).
CPUINFO_NAME = {"sse4.2": "sse4_2", "avx512bf16": "avx512_bf16", "avx512vnni": "avx512_vnni",
                "avx512vbmi": "avx512vbmi", "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni",
                "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16"}


@dataclass
class NativeTarget:
    """What ``-march=native`` resolves to, next to what the CPU says it has."""

    compiler: str
    march: str | None
    mtune: str | None
    enabled: list[str]
    disabled: list[str]
    cpu_flags: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    planned: bool = False

    def isa_rows(self) -> list[dict]:
        """One row per key ISA extension: gcc enables it? the CPU has it?"""
        flags = set(self.cpu_flags)
        rows = []
        for isa in KEY_ISA:
            cpu = CPUINFO_NAME.get(isa, isa.replace(".", "_"))
            rows.append({"isa": isa, "gcc -march=native": isa in self.enabled,
                         "cpu (/proc/cpuinfo)": (cpu in flags) if flags else None})
        return rows

    def missed(self) -> list[str]:
        """Extensions the CPU has that this gcc's -march=native leaves off (compiler too old)."""
        return [r["isa"] for r in self.isa_rows() if r["cpu (/proc/cpuinfo)"] and not r["gcc -march=native"]]

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.isa_rows())

    def to_dict(self) -> dict:
        return {"compiler": self.compiler, "march": self.march, "mtune": self.mtune, "enabled": self.enabled,
                "disabled": self.disabled, "params": self.params, "isa": self.isa_rows(), "missed": self.missed()}

    def _repr_markdown_(self) -> str:
        rows = "\n".join(f"| {r['isa']} | {'yes' if r['gcc -march=native'] else 'no'} | "
                         f"{'yes' if r['cpu (/proc/cpuinfo)'] else ('no' if r['cpu (/proc/cpuinfo)'] is False else '?')} |"
                         for r in self.isa_rows())
        missed = self.missed()
        note = (f"\n\nThe CPU has {', '.join(missed)} but {self.compiler} does not enable "
                f"{'it' if len(missed) == 1 else 'them'} with -march=native." if missed else "")
        return (f"`-march=native` with {self.compiler} → **`-march={self.march}`** (`-mtune={self.mtune}`), "
                f"{len(self.enabled)} extensions on, {len(self.disabled)} off.\n\n"
                f"| extension | gcc -march=native | CPU has it |\n|---|---|---|\n{rows}{note}")


def native_target(run, compiler: str = "gcc") -> NativeTarget:
    """Ask the compiler what -march=native means here (read-only: runs in plan mode too)."""
    r = run.runner
    ver = gather(r, toolchain.version_line(compiler))
    cc1 = gather(r, toolchain.native_cc1(compiler))
    opts = gather(r, toolchain.native_options(compiler))
    if not cc1["march"] and opts.get("-march="):
        cc1["march"] = opts["-march="]
    flags = gather(r, cpu_facts.FLAGS)
    return NativeTarget(compiler=ver or compiler, march=cc1["march"], mtune=cc1["mtune"],
                        enabled=cc1["enabled"], disabled=cc1["disabled"], cpu_flags=flags, params=cc1["params"])


# ---- makepkg.conf (Arch targets) ----------------------------------------------------------------
MAKEPKG_RISKS = [
    ("-march=native", "Binaries run only on CPUs with the same extensions (SIGILL elsewhere). 'native' means the "
     "BUILD machine: building an image on another host bakes in that host's CPU; name the target's -march instead."),
    ("-O3", "More inlining/unrolling: larger binaries, occasionally exposes undefined behaviour; gains outside "
     "hot numeric loops are small. llama.cpp sets its own flags in CMake anyway."),
    ("-fopenmp (blueprint)", "NOT kept: in global CFLAGS it links every package against libgomp and switches on "
     "OpenMP pragmas packages never tested. llama.cpp enables OpenMP itself (GGML_OPENMP)."),
    ("-flto", "Not set globally: long builds and occasional miscompiles; use per package (GGML_LTO for llama.cpp)."),
    ("-ffast-math", "Not set: breaks IEEE semantics (NaN/Inf checks, reductions) that some ML ops rely on."),
    ("Arch's hardening", "Kept: -fstack-clash-protection -fcf-protection -D_FORTIFY_SOURCE=3 and -z relro/now; "
     "the blueprint's CFLAGS line drops them by replacing the whole variable."),
    ("COMPRESSZST (blueprint: --ultra -20)", "NOT kept: level 20 is the slowest, not the fastest; the comment "
     "contradicts the value. makepkg's default `zstd -c -T0 -` is fast; packages are built once here."),
]


def makepkg_conf(march: str = "native", *, mtune: str | None = None, opt: str = "-O3") -> str:
    """The blueprint's makepkg.conf settings for an Arch target, corrected where it is wrong.

    Returned as text; later phases write it into a target root (``/etc/makepkg.conf.d/synapse.conf``,
    which makepkg reads after ``/etc/makepkg.conf``), never onto this machine.
    """
    tune = f" -mtune={mtune}" if mtune else ""
    risks = "\n".join(f"#   {k}: {v}" for k, v in MAKEPKG_RISKS)
    return f"""# Synapse: compiler flags for packages built on this target (blueprint 2.2), read after
# /etc/makepkg.conf. Risks and deviations from the blueprint:
{risks}
CFLAGS="-march={march}{tune} {opt} -pipe -fno-plt -fexceptions \\
        -Wp,-D_FORTIFY_SOURCE=3 -Wformat -Werror=format-security \\
        -fstack-clash-protection -fcf-protection \\
        -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer"
CXXFLAGS="$CFLAGS -Wp,-D_GLIBCXX_ASSERTIONS"
LDFLAGS="-Wl,-O1,--sort-common,--as-needed,-z,relro,-z,now"
MAKEFLAGS="-j$(nproc)"
COMPRESSZST=(zstd -c -T0 -)
"""
