"""The pure kernel-config parts: .config parsing, Kconfig files, expressions, the table's
resolution and the requested-vs-resulting reasons. Fixtures are excerpts of Debian's
linux-source-6.12 Kconfig files (tests/fixtures/kernel/)."""
from pathlib import Path

import pytest

from aios_lib.kernel import kconfig
from aios_lib.kernel.build import KbuildProgress
from aios_lib.kernel.config import read_modules_list
from aios_lib.kernel.source import KernelError

FIX = Path(__file__).parent / "fixtures" / "kernel"


def _index():
    """An index of the real Kconfig excerpts (one per file, as the tree has them)."""
    idx = kconfig.KconfigIndex()
    for name in sorted(FIX.glob("Kconfig.*")):
        kconfig.parse_kconfig_text(name.read_text(), name.name, idx, [])
    for n, s in idx.symbols.items():
        for d in s.definitions:
            for t, c in d.selects:
                idx.selected_by.setdefault(t, []).append((n, c))
    return idx


def test_parse_config_values():
    cfg = kconfig.parse_config('CONFIG_HZ_300=y\n# CONFIG_HZ_1000 is not set\nCONFIG_HZ=300\n'
                               'CONFIG_LOCALVERSION="-synapse"\nCONFIG_E1000=m\n# comment\n')
    assert cfg == {"HZ_300": "y", "HZ_1000": "n", "HZ": "300", "LOCALVERSION": "-synapse", "E1000": "m"}
    assert kconfig.config_value(cfg, "NUMA") == "n"
    assert kconfig.count_config(cfg)["y"] == 1


def test_kconfig_choices_and_depends_from_real_files():
    idx = _index()
    hz = idx.get("HZ_300")
    assert hz.choice is not None and hz.choice.members == ["HZ_100", "HZ_250", "HZ_300", "HZ_1000"]
    assert idx.get("HZ").type == "int" and not idx.get("HZ").has_prompt
    pre = idx.get("PREEMPT_VOLUNTARY").choice.members
    assert pre[:3] == ["PREEMPT_NONE", "PREEMPT_VOLUNTARY", "PREEMPT"] and "PREEMPT_RT" in pre
    rt = idx.get("PREEMPT_RT")
    assert any("EXPERT" in d and "ARCH_SUPPORTS_RT" in d for d in rt.definitions[0].depends)
    full = idx.get("NO_HZ_FULL")
    assert full.choice is not None and any("SMP" in line for line in full.depends_lines())
    thp = idx.get("TRANSPARENT_HUGEPAGE")
    assert any("!PREEMPT_RT" in d for d in thp.definitions[0].depends)
    # help text is skipped, not read as keywords
    assert "HZ_300" in idx and "Kernel" not in idx.symbols


def test_expressions():
    cfg = {"SMP": "y", "PREEMPT_RT": "n", "MODULES": "y", "X": "m", "HZ": "300"}
    assert kconfig.evaluate("SMP && !PREEMPT_RT", cfg) == 2
    assert kconfig.evaluate("!SMP || PREEMPT_RT", cfg) == 0
    assert kconfig.evaluate("X", cfg) == 1 and kconfig.evaluate("!X", cfg) == 1
    assert kconfig.evaluate("HZ = 300", cfg) == 2 and kconfig.evaluate("HZ != 300", cfg) == 0
    assert kconfig.evaluate("(SMP && UNKNOWN) || HZ >= 250", cfg) == 2
    assert kconfig.conjuncts("(A && (B || C)) && !D") == ["A", "(B || C)", "!D"]


def test_resolve_table_renames_choices_and_unknowns():
    idx = _index()
    rows = kconfig.resolve_table({"SCHED_EEVDF": "y", "PREEMPT_VOLUNTARY": "y", "HZ": "300",
                                  "NO_HZ_FULL": "y", "SPECULATION_MITIGATIONS": "n"}, idx)
    by = {r.requested: r for r in rows}
    assert by["SCHED_EEVDF"].how == "unknown" and by["SCHED_EEVDF"].lines == ["CONFIG_SCHED_EEVDF=y"]
    assert by["HZ"].how == "choice-value" and by["HZ"].symbol == "HZ_300"
    assert by["HZ"].lines == ["# CONFIG_HZ_100 is not set", "# CONFIG_HZ_250 is not set",
                              "# CONFIG_HZ_1000 is not set", "CONFIG_HZ_300=y"]
    assert "# CONFIG_PREEMPT is not set" in by["PREEMPT_VOLUNTARY"].lines
    assert "# CONFIG_PREEMPT_RT is not set" in by["PREEMPT_VOLUNTARY"].lines
    assert "# CONFIG_NO_HZ_IDLE is not set" in by["NO_HZ_FULL"].lines
    assert by["SPECULATION_MITIGATIONS"].how == "renamed"
    assert by["SPECULATION_MITIGATIONS"].lines == ["# CONFIG_CPU_MITIGATIONS is not set"]
    frag = kconfig.fragment_text(rows)
    assert "CONFIG_HZ_300=y" in frag and "CONFIG_HZ=300" not in frag
    literal = kconfig.resolve_table({"HZ": "300", "SCHED_EEVDF": "y"}, idx, resolve=False)
    assert literal[0].lines == ["CONFIG_HZ=300"] and literal[1].how == "unknown"


def test_analyze_reasons():
    idx = _index()
    rows = kconfig.resolve_table({"SCHED_EEVDF": "y", "NO_HZ_FULL": "y", "TRANSPARENT_HUGEPAGE": "y",
                                  "HZ": "300", "SPECULATION_MITIGATIONS": "n"}, idx)
    base = {"HZ_250": "y", "HZ": "250"}
    final = {"HZ_300": "y", "HZ": "300", "SMP": "n", "NO_HZ_IDLE": "y", "PREEMPT_RT": "y",
             "CPU_MITIGATIONS": "n"}
    res = {r.requested: r for r in kconfig.analyze(rows, base, final, idx, ["SCHED_EEVDF"], (6, 12, 117))}
    assert res["SCHED_EEVDF"].status == "no such symbol" and "unknown symbol" in res["SCHED_EEVDF"].reason
    assert "EEVDF unconditionally" in res["SCHED_EEVDF"].notes
    assert res["NO_HZ_FULL"].status == "dependency unmet" and "SMP" in res["NO_HZ_FULL"].depends
    assert res["TRANSPARENT_HUGEPAGE"].status == "impossible" and "PREEMPT_RT=y" in res["TRANSPARENT_HUGEPAGE"].reason
    assert res["HZ"].stuck and res["HZ"].base == "HZ=250"
    assert res["SPECULATION_MITIGATIONS"].stuck and res["SPECULATION_MITIGATIONS"].status == "renamed (stuck)"
    # a 6.1 tree is CFS
    res61 = kconfig.analyze(rows[:1], {}, {}, idx, ["SCHED_EEVDF"], (6, 1, 192))
    assert "CFS" in res61[0].notes


def test_unknown_symbol_warnings_parse():
    out = (".config:1270:warning: unknown symbol: SCHED_EEVDF\n#\n# configuration written to .config\n"
           ".config:1275:warning: unknown symbol: SCHED_EEVDF\n")
    assert kconfig.unknown_symbols(out) == ["SCHED_EEVDF"]
    assert kconfig.choice_overrides(".config:12:warning: override: HZ_1000 changes choice state\n") == ["HZ_1000"]


def test_localmodconfig_refuses_empty_lists():
    for name in ("lsmod-empty.txt", "lsmod-blank.txt", "does-not-exist.txt"):
        with pytest.raises(KernelError, match="lsmod > lsmod.txt"):
            read_modules_list(FIX / name)
    with pytest.raises(KernelError, match="no module list"):
        read_modules_list(None)
    assert read_modules_list(FIX / "lsmod-kvm-guest.txt")[:2] == ["virtio_net", "net_failover"]


def test_kbuild_progress_counts_objects():
    p = KbuildProgress(estimate=4)
    assert p("  CC      kernel/fork.o") == 0.25
    # AR is a kbuild line (the fraction is reported again) but not an object: neither counted nor `last`
    assert p("  AR      kernel/built-in.a") == 0.25 and p.objects == 1 and p.last == "kernel/fork.o"
    assert p("  CC [M]  drivers/net/e1000/e1000_main.o") == 0.5 and p.last == "drivers/net/e1000/e1000_main.o"
    assert p("make[2]: Entering directory") is None
    for _ in range(5):
        p("  AS      arch/x86/entry/entry_64.o")
    assert p.objects == 7 and p("  CC      x.o") == 0.99
    assert "objects" in p.status()
