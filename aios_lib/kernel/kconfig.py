"""Kernel configuration, the pure parts: ``.config`` files, the tree's Kconfig symbols, turning a
table of wanted options into a config fragment, and explaining what stuck after ``olddefconfig``.

Nothing here starts a process. Reading the tree's Kconfig files is plain file reading; the
commands (``make tinyconfig``, ``merge_config.sh``, ``olddefconfig``) are in :mod:`aios_lib.kernel.build`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

# ---------------------------------------------------------------------------------------------
# .config files
# ---------------------------------------------------------------------------------------------
_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set\s*$")


def parse_config(text: str) -> dict[str, str]:
    """``.config`` text -> {SYMBOL: value}; ``# CONFIG_X is not set`` gives ``"n"``.

    String values lose their quotes (``CONFIG_LOCALVERSION="-x"`` -> ``-x``).
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = _SET.match(line)
        if m:
            v = m.group(2)
            if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
                v = v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out[m.group(1)] = v
            continue
        m = _UNSET.match(line)
        if m:
            out[m.group(1)] = "n"
    return out


def config_value(cfg: Mapping[str, str], sym: str) -> str:
    """The value of ``sym``; a symbol absent from a .config is off (``n``)."""
    return cfg.get(sym, "n")


def count_config(cfg: Mapping[str, str]) -> dict[str, int]:
    vals = list(cfg.values())
    return {"y": vals.count("y"), "m": vals.count("m"), "n": vals.count("n"), "total": len(vals)}


# ---------------------------------------------------------------------------------------------
# Kconfig symbols of a tree
# ---------------------------------------------------------------------------------------------
@dataclass
class Definition:
    """One ``config SYMBOL`` block (a symbol may be defined in several files)."""

    where: str  # file:line
    type: str | None = None
    prompt: str | None = None
    prompt_if: str | None = None
    depends: list[str] = field(default_factory=list)  # this block's own `depends on` lines
    inherited: list[str] = field(default_factory=list)  # from enclosing if/menu/choice
    selects: list[tuple[str, str | None]] = field(default_factory=list)  # (symbol, if-condition)
    defaults: list[str] = field(default_factory=list)

    def condition(self) -> str | None:
        parts = [f"({d})" for d in self.inherited + self.depends]
        return " && ".join(parts) if parts else None


@dataclass
class Choice:
    where: str
    prompt: str | None = None
    members: list[str] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)


@dataclass
class Symbol:
    name: str
    definitions: list[Definition] = field(default_factory=list)
    choice: Choice | None = None

    @property
    def type(self) -> str | None:
        return next((d.type for d in self.definitions if d.type), None)

    @property
    def has_prompt(self) -> bool:
        return any(d.prompt is not None for d in self.definitions)

    def depends_lines(self) -> list[str]:
        """``depends on`` lines as written, with where they are."""
        out = []
        for d in self.definitions:
            out += [f"depends on {x}    ({d.where})" for x in d.depends]
        if self.choice:
            out += [f"depends on {x}    (choice at {self.choice.where})" for x in self.choice.depends]
        return out

    def conditions(self) -> list[str]:
        """Each definition's full visibility condition (own + enclosing if/menu/choice)."""
        out = []
        for d in self.definitions:
            parts = [f"({x})" for x in d.inherited + d.depends]
            if self.choice:
                parts += [f"({x})" for x in self.choice.depends]
            out.append(" && ".join(parts) if parts else "y")
        return out


@dataclass
class KconfigIndex:
    symbols: dict[str, Symbol] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)
    selected_by: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    files: int = 0

    def __contains__(self, name: str) -> bool:
        return name in self.symbols

    def get(self, name: str) -> Symbol | None:
        return self.symbols.get(name)

    def siblings(self, name: str) -> list[str]:
        s = self.symbols.get(name)
        if not s or not s.choice:
            return []
        return [m for m in s.choice.members if m != name]


_KEYWORD = re.compile(r"^([\w-]+)\s*(.*)$")
_TYPES = {"bool", "tristate", "int", "string", "hex", "def_bool", "def_tristate"}
_STR = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(?:if\s+(.*))?$')


def _split_prompt(rest: str) -> tuple[str | None, str | None]:
    rest = rest.strip()
    m = _STR.match(rest)
    if m:
        return m.group(1), (m.group(2).strip() if m.group(2) else None)
    return None, None


def _width(line: str) -> int:
    s = line.expandtabs(8)
    return len(s) - len(s.lstrip())


def parse_kconfig_text(text: str, filename: str, index: KconfigIndex, stack: list | None = None,
                       on_source=None) -> None:
    """Add the symbols and choices of one Kconfig file to ``index``.

    ``stack`` holds the enclosing if/menu/choice frames (shared across ``source``d files);
    ``on_source(kind, path)`` is called for each source/rsource/osource/orsource line.
    """
    stack = stack if stack is not None else []
    raw = text.splitlines()
    # join continuation lines, keeping the first line's number
    lines: list[tuple[int, str]] = []
    i = 0
    while i < len(raw):
        no, line = i + 1, raw[i]
        while line.endswith("\\") and i + 1 < len(raw):
            i += 1
            line = line[:-1] + " " + raw[i].strip()
        lines.append((no, line))
        i += 1

    entry: Definition | None = None  # the config block being read
    frame_for_depends = None  # a menu or choice frame whose `depends on` lines follow it
    in_help = False
    help_indent = None
    help_start = 0

    def inherited() -> list[str]:
        out = []
        for f in stack:
            out += f["conds"]
        return out

    for no, line in lines:
        if in_help:
            if not line.strip():
                continue
            w = _width(line)
            if help_indent is None:
                if w > help_start:
                    help_indent = w
                    continue
                in_help = False
            elif w >= help_indent:
                continue
            else:
                in_help = False
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _KEYWORD.match(stripped)
        if not m:
            continue
        kw, rest = m.group(1), m.group(2).strip()
        if rest.startswith(("=", ":=", "+=")):  # a macro (scripts/Kconfig.include), not a keyword
            continue
        where = f"{filename}:{no}"
        if kw in ("config", "menuconfig"):
            name = rest.split()[0] if rest else ""
            sym = index.symbols.setdefault(name, Symbol(name))
            entry = Definition(where=where, inherited=inherited())
            sym.definitions.append(entry)
            ch = next((f["choice"] for f in reversed(stack) if f["kind"] == "choice"), None)
            if ch is not None and stack and stack[-1]["kind"] == "choice":
                if name not in ch.members:
                    ch.members.append(name)
                sym.choice = ch
                # the choice's own depends are shown separately
                entry.inherited = inherited()[: len(inherited()) - len(stack[-1]["conds"])]
            frame_for_depends = None
            continue
        if kw == "choice":
            ch = Choice(where=where, inherited=inherited())
            index.choices.append(ch)
            stack.append({"kind": "choice", "conds": [], "choice": ch})
            entry, frame_for_depends = None, stack[-1]
            continue
        if kw == "endchoice":
            while stack and stack[-1]["kind"] != "choice":
                stack.pop()
            if stack:
                stack.pop()
            entry = frame_for_depends = None
            continue
        if kw == "menu":
            stack.append({"kind": "menu", "conds": []})
            entry, frame_for_depends = None, stack[-1]
            continue
        if kw == "endmenu":
            while stack and stack[-1]["kind"] != "menu":
                stack.pop()
            if stack:
                stack.pop()
            entry = frame_for_depends = None
            continue
        if kw == "if":
            stack.append({"kind": "if", "conds": [rest]})
            entry = frame_for_depends = None
            continue
        if kw == "endif":
            while stack and stack[-1]["kind"] != "if":
                stack.pop()
            if stack:
                stack.pop()
            entry = frame_for_depends = None
            continue
        if kw in ("source", "rsource", "osource", "orsource"):
            path, _ = _split_prompt(rest)
            if on_source and path:
                on_source(kw, path)
            entry = frame_for_depends = None
            continue
        if kw in ("comment", "mainmenu"):
            entry = frame_for_depends = None
            continue
        if kw in ("help", "---help---"):
            in_help, help_indent, help_start = True, None, _width(line)
            continue
        if kw == "depends":
            expr = rest[2:].strip() if rest.startswith("on") else rest
            if entry is not None:
                entry.depends.append(expr)
            elif frame_for_depends is not None:
                frame_for_depends["conds"].append(expr)
                if frame_for_depends["kind"] == "choice":
                    frame_for_depends["choice"].depends.append(expr)
            continue
        if kw == "prompt":
            p, cond = _split_prompt(rest)
            if entry is not None:
                entry.prompt, entry.prompt_if = p, cond
            elif frame_for_depends is not None and frame_for_depends["kind"] == "choice":
                frame_for_depends["choice"].prompt = p
            continue
        if kw in _TYPES:
            target_type = {"def_bool": "bool", "def_tristate": "tristate"}.get(kw, kw)
            if entry is not None:
                entry.type = target_type
                if kw.startswith("def_"):
                    entry.defaults.append(rest)
                else:
                    p, cond = _split_prompt(rest)
                    if p is not None:
                        entry.prompt, entry.prompt_if = p, cond
            elif frame_for_depends is not None and frame_for_depends["kind"] == "choice":
                p, _ = _split_prompt(rest)
                if p is not None:
                    frame_for_depends["choice"].prompt = p
            continue
        if kw in ("select", "imply") and entry is not None:
            parts = rest.split(None, 1)
            target = parts[0]
            cond = None
            if len(parts) > 1 and parts[1].startswith("if "):
                cond = parts[1][3:].strip()
            if kw == "select":
                entry.selects.append((target, cond))
            continue
        if kw == "default" and entry is not None:
            entry.defaults.append(rest)
            continue
        # range, visible, option, modules, transitional...: not needed here


def load_kconfig(tree: str | Path, arch: str = "x86") -> KconfigIndex:
    """Every Kconfig file reachable from ``tree/Kconfig`` for ``arch``, as one index."""
    tree = Path(tree)
    index = KconfigIndex()
    variables = {"SRCARCH": arch, "ARCH": arch, "HEADER_ARCH": arch}
    stack: list = []

    def expand(path: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), path)

    def do_file(path: Path, rel: str) -> None:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return
        index.files += 1
        here = path.parent

        def on_source(kind: str, p: str) -> None:
            p = expand(p)
            base = here if kind in ("rsource", "orsource") else tree
            targets = sorted(base.glob(p)) if any(c in p for c in "*?[") else [base / p]
            for t in targets:
                if t.is_file():
                    do_file(t, str(t.relative_to(tree)))

        parse_kconfig_text(text, rel, index, stack, on_source)

    do_file(tree / "Kconfig", "Kconfig")
    # selected_by for symbols defined after their selector was read
    index.selected_by = {}
    for name, sym in index.symbols.items():
        for d in sym.definitions:
            for target, cond in d.selects:
                index.selected_by.setdefault(target, []).append((name, cond))
    return index


def tree_version(makefile_text: str) -> tuple[int, int, int]:
    """(VERSION, PATCHLEVEL, SUBLEVEL) from the top of a kernel Makefile."""
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)", makefile_text, re.M)
        vals[key] = int(m.group(1)) if m else 0
    return vals["VERSION"], vals["PATCHLEVEL"], vals["SUBLEVEL"]


# ---------------------------------------------------------------------------------------------
# Kconfig expressions
# ---------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(&&|\|\||!=|<=|>=|[!()=<>]|"(?:[^"\\]|\\.)*"|\$\([^)]*\)|[A-Za-z0-9_.+-]+)')
_TRI = {"n": 0, "m": 1, "y": 2}


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


class _Eval:
    def __init__(self, tokens: list[str], cfg: Mapping[str, str]):
        self.t, self.i, self.cfg = tokens, 0, cfg

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def value(self, tok: str) -> str:
        if tok.startswith('"'):
            return tok[1:-1]
        if tok in ("y", "m", "n"):
            return tok
        if tok.startswith("$("):
            return "n"
        if re.fullmatch(r"-?(0x)?[0-9a-fA-F]+", tok) and tok not in self.cfg:
            return tok
        return self.cfg.get(tok, "n")

    def tri(self, v: str) -> int:
        return _TRI.get(v, 0)

    def expr(self) -> int:
        v = self.and_()
        while self.peek() == "||":
            self.take()
            v = max(v, self.and_())
        return v

    def and_(self) -> int:
        v = self.unary()
        while self.peek() == "&&":
            self.take()
            v = min(v, self.unary())
        return v

    def unary(self) -> int:
        tok = self.peek()
        if tok == "!":
            self.take()
            return 2 - self.unary()
        if tok == "(":
            self.take()
            v = self.expr()
            if self.peek() == ")":
                self.take()
            return v
        a = self.take()
        if a is None:
            return 0
        if self.peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = self.take()
            b = self.take() or "n"
            va, vb = self.value(a), self.value(b)
            try:
                na, nb = int(va, 0), int(vb, 0)
                cmp = (na > nb) - (na < nb)
            except ValueError:
                cmp = (va > vb) - (va < vb)
            ok = {"=": cmp == 0, "!=": cmp != 0, "<": cmp < 0, ">": cmp > 0, "<=": cmp <= 0, ">=": cmp >= 0}[op]
            return 2 if ok else 0
        return self.tri(self.value(a))


def evaluate(expr: str, cfg: Mapping[str, str]) -> int:
    """A Kconfig expression's tristate value (0 n, 1 m, 2 y) under the values in ``cfg``."""
    return _Eval(_tokens(expr), cfg).expr()


def conjuncts(expr: str) -> list[str]:
    """Top-level ``&&`` parts of an expression (outer parentheses removed)."""
    expr = expr.strip()
    while expr.startswith("(") and _matching(expr, 0) == len(expr) - 1:
        expr = expr[1:-1].strip()
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        c = expr[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == '"':
            j = expr.find('"', i + 1)
            i = j if j > 0 else i
        elif expr.startswith("&&", i) and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(expr[start:].strip())
    out = []
    for p in parts:
        if p.startswith("(") and _matching(p, 0) == len(p) - 1:
            inner = conjuncts(p)
            out += inner if len(inner) > 1 else [p]
        else:
            out.append(p)
    return [p for p in out if p]


def _matching(s: str, i: int) -> int:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


# ---------------------------------------------------------------------------------------------
# The table -> a fragment
# ---------------------------------------------------------------------------------------------
#: Symbols renamed upstream: old -> (new, note)
RENAMES = {
    "SPECULATION_MITIGATIONS": ("CPU_MITIGATIONS",
                                "renamed to CPU_MITIGATIONS in 6.9 (commit 'cpu: Migrate CPU_MITIGATIONS to "
                                "generic code'), backported to 6.1.y and 6.6.y; the old name is unknown to "
                                "these trees, so Kconfig would drop it silently"),
}

#: Why a symbol of a well-known table does not exist
ABSENT_NOTES = {
    "SCHED_EEVDF": "there is no such option: EEVDF replaced CFS in 6.6 and is not selectable",
}


@dataclass
class TableRow:
    requested: str  # the symbol as the table names it
    value: str  # as the table gives it
    symbol: str | None = None  # what is actually set (after a rename or choice translation)
    want: str | None = None  # value of `symbol` that means "stuck"
    how: str = "direct"  # direct | renamed | choice | choice-value | unknown | literal
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _line(sym: str, value: str, typ: str | None = None) -> str:
    if value == "n":
        return f"# CONFIG_{sym} is not set"
    if typ == "string" and not (value.startswith('"') and value.endswith('"')):
        return f'CONFIG_{sym}="{value}"'
    return f"CONFIG_{sym}={value}"


def resolve_table(options: Mapping[str, str], index: KconfigIndex | None, resolve: bool = True,
                  version: tuple[int, int, int] | None = None) -> list[TableRow]:
    """Turn the table into fragment lines, row by row, saying what each row became.

    With ``resolve`` a known rename is applied (with a note), ``SYM: value`` for a promptless
    symbol that is derived from a choice (``HZ: 300``) becomes that choice's member (``HZ_300``),
    and a choice member set to ``y`` turns its siblings off (read from the tree's Kconfig).
    Unknown symbols stay in the fragment so Kconfig's own unknown-symbol warning reports them.
    """
    rows: list[TableRow] = []
    for req, raw in options.items():
        value = str(raw).strip()
        if value in ("true", "True"):
            value = "y"
        if value in ("false", "False"):
            value = "n"
        row = TableRow(requested=req, value=value)
        rows.append(row)
        if not resolve:
            row.symbol, row.want, row.how = req, value, "literal"
            row.lines = [_line(req, value)]
            if index is not None and req not in index:
                row.how = "unknown"
            continue
        if index is None:  # no tree to read: only static knowledge
            sym = RENAMES.get(req, (req,))[0]
            row.symbol, row.want = sym, value
            row.how = "renamed" if sym != req else "direct"
            if sym != req:
                row.notes.append(RENAMES[req][1])
            row.lines = [_line(sym, value)]
            row.notes.append("tree not read yet: choices and unknown symbols are resolved once it is extracted")
            continue
        sym = req
        if sym not in index and sym in RENAMES and RENAMES[sym][0] in index:
            sym = RENAMES[req][0]
            row.how = "renamed"
            row.notes.append(RENAMES[req][1])
        if sym not in index:
            row.symbol, row.want, row.how = req, value, "unknown"
            row.lines = [_line(req, value)]
            continue
        s = index.get(sym)
        member = f"{sym}_{value}"
        if (s.type in ("int", "string", "hex") and not s.has_prompt and member in index
                and index.get(member).choice is not None):
            row.how = "choice-value"
            row.notes.append(f"{sym} has no prompt: it is derived from the choice "
                             f"{'/'.join(index.get(member).choice.members)}; set {member}=y instead")
            row.symbol, row.want = member, "y"
            row.lines = [_line(m, "n") for m in index.siblings(member)] + [_line(member, "y")]
            row.notes.append(f"{sym}={value} is checked in the result too")
            continue
        row.symbol, row.want = sym, value
        if s.choice is not None and value == "y":
            if row.how == "direct":
                row.how = "choice"
            sibs = index.siblings(sym)
            row.lines = [_line(m, "n") for m in sibs] + [_line(sym, "y")]
            row.notes.append(f"choice member: siblings {', '.join(sibs)} turned off")
        else:
            row.lines = [_line(sym, value, s.type)]
    return rows


def fragment_text(rows: Iterable[TableRow], title: str = "Synapse kernel table") -> str:
    out = [f"# {title} (generated; merged with scripts/kconfig/merge_config.sh)"]
    for r in rows:
        out.append(f"# {r.requested}={r.value}" + (f" -> {r.symbol}" if r.symbol and r.symbol != r.requested else "")
                   + f" [{r.how}]")
        out += r.lines
    return "\n".join(out) + "\n"


def minimum_fragment(symbols: Iterable[str]) -> str:
    return "# minimum on top of tinyconfig (generated)\n" + "".join(f"CONFIG_{s}=y\n" for s in symbols)


# ---------------------------------------------------------------------------------------------
# olddefconfig output and the requested-vs-resulting analysis
# ---------------------------------------------------------------------------------------------
_UNKNOWN = re.compile(r"(?:^|\s|:)(?:warning:\s*)?unknown symbol:\s*([A-Za-z0-9_]+)", re.M)
_OVERRIDE = re.compile(r"override: (\S+) changes choice state", re.M)


def unknown_symbols(output: str) -> list[str]:
    """Symbols Kconfig reported with KCONFIG_WARN_UNKNOWN_SYMBOLS=1 (in order, once each)."""
    seen: list[str] = []
    for m in _UNKNOWN.finditer(output):
        s = m.group(1).removeprefix("CONFIG_")
        if s not in seen:
            seen.append(s)
    return seen


def choice_overrides(output: str) -> list[str]:
    return [m.group(1).removeprefix("CONFIG_") for m in _OVERRIDE.finditer(output)]


def _norm(v: str | None) -> str:
    return "n" if v in (None, "") else v


def _version_str(v: tuple[int, int, int] | None) -> str:
    return ".".join(map(str, v)) if v else "this"


def runtime_notes(row: TableRow, final: Mapping[str, str], version: tuple[int, int, int] | None) -> list[str]:
    """What the .config cannot promise: the caveats that show only at runtime."""
    s, notes = row.requested, []
    if s == "SCHED_EEVDF":
        if version and version >= (6, 6, 0):
            notes.append(f"this {_version_str(version)} tree runs EEVDF unconditionally (since 6.6): "
                         "nothing to set; check at runtime: /sys/kernel/debug/sched/base_slice_ns")
        elif version:
            notes.append(f"this {_version_str(version)} tree is CFS: EEVDF needs a 6.6 or newer tree "
                         "(kernel.version: '6.12')")
    if row.symbol == "NO_HZ_FULL" and _norm(final.get("NO_HZ_FULL")) == "y":
        notes.append("does nothing without nohz_full=<cpus> on the kernel command line (and keep CPU 0 "
                     "for housekeeping)")
    if row.symbol == "TRANSPARENT_HUGEPAGE" and _norm(final.get("TRANSPARENT_HUGEPAGE")) == "y":
        mode = "always" if final.get("TRANSPARENT_HUGEPAGE_ALWAYS") == "y" else "madvise" \
            if final.get("TRANSPARENT_HUGEPAGE_MADVISE") == "y" else "?"
        notes.append(f"default mode {mode} (TRANSPARENT_HUGEPAGE_{mode.upper()}); the kernel turns THP off "
                     "by default below 512 MiB RAM; transparent_hugepage=madvise on the command line sets the "
                     "blueprint's mode")
    if row.symbol == "CPU_FREQ_GOV_PERFORMANCE" and _norm(final.get("CPU_FREQ_GOV_PERFORMANCE")) in ("y", "m"):
        default = next((k.removeprefix("CPU_FREQ_DEFAULT_GOV_") for k, v in final.items()
                        if k.startswith("CPU_FREQ_DEFAULT_GOV_") and v == "y"), None)
        notes.append("only builds the governor; the default governor is "
                     f"{default or 'unset'} (CPU_FREQ_DEFAULT_GOV_PERFORMANCE=y or cpupower at runtime "
                     "makes it the one in use)")
    if row.symbol in ("PREEMPT_VOLUNTARY", "PREEMPT", "PREEMPT_NONE") and final.get("PREEMPT_DYNAMIC") == "y":
        notes.append("PREEMPT_DYNAMIC=y: this is only the boot default; preempt= on the command line overrides it")
    if row.symbol == "CPU_MITIGATIONS" and _norm(final.get("CPU_MITIGATIONS")) == "n":
        notes.append("unsafe on untrusted networks or with untrusted code; "
                     + ("on 6.1 `mitigations=auto` on the command line turns them back on"
                        if version and version < (6, 9, 0) else
                        "a kernel built without mitigations ignores mitigations= on the command line"))
    if row.symbol == "NUMA" and _norm(final.get("NUMA")) == "n":
        notes.append("fine for a single-socket machine; check `lscpu` NUMA node(s) on the target first")
    return notes


@dataclass
class ResultRow:
    requested: str
    value: str
    applied_as: str
    base: str
    result: str
    stuck: bool
    status: str  # stuck | renamed | no such symbol | dependency unmet | lost to choice | impossible | ...
    reason: str
    depends: str = ""
    notes: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _why_unmet(sym: Symbol, final: Mapping[str, str], index: KconfigIndex) -> tuple[str, str, str] | None:
    """(status, reason, depends text) when a symbol's dependencies are false in ``final``."""
    conds = sym.conditions()
    if any(evaluate(c, final) > 0 for c in conds):
        return None
    blockers, missing = [], []
    cond = conds[0] if conds else "y"
    for part in conjuncts(cond):
        if evaluate(part, final) == 0:
            inner = part.strip()
            while inner.startswith("(") and _matching(inner, 0) == len(inner) - 1:
                inner = inner[1:-1].strip()
            m = re.fullmatch(r"!\s*([A-Za-z0-9_]+)", inner)
            if m and _norm(final.get(m.group(1))) in ("y", "m"):
                blockers.append(f"{m.group(1)}={final.get(m.group(1))}")
            else:
                missing.append(inner)
    deps = "; ".join(sym.depends_lines()) or f"(inherited) {cond}"
    if blockers:
        return ("impossible", f"made impossible by {', '.join(blockers)} (depends on {' && '.join('!' + b.split('=')[0] for b in blockers)})", deps)
    return ("dependency unmet", f"needs {' && '.join(missing) or cond}, which is off in the result", deps)


def analyze(rows: list[TableRow], base: Mapping[str, str], final: Mapping[str, str], index: KconfigIndex | None,
            unknown: Iterable[str] = (), version: tuple[int, int, int] | None = None) -> list[ResultRow]:
    """Requested vs resulting, with the reason for every row that did not stick."""
    unknown = set(unknown)
    wanted = {r.symbol: r for r in rows if r.symbol}
    out: list[ResultRow] = []
    for r in rows:
        sym = r.symbol or r.requested
        res = _norm(final.get(sym))
        want = _norm(r.want or r.value)
        applied = sym if sym == r.requested else f"{sym}={r.want}"
        if r.how == "choice-value":
            derived = final.get(r.requested)
            applied = f"{sym}=y (+ siblings off)"
            ok = res == "y" and (derived is None or derived == r.value)
            res_txt = f"{sym}={res}, {r.requested}={derived}"
        else:
            ok = res == want
            res_txt = res
        base_txt = _norm(base.get(sym)) if r.how != "choice-value" else f"{r.requested}={base.get(r.requested, 'n')}"
        s = index.get(sym) if index else None
        notes = list(r.notes) + runtime_notes(r, final, version)
        row = ResultRow(r.requested, r.value, applied, base_txt, res_txt, ok, "stuck", "", "", "")
        if r.how == "unknown" or (index is not None and s is None):
            row.stuck, row.status = False, "no such symbol"
            said = "Kconfig warned `unknown symbol`" if sym in unknown else "not defined in any Kconfig file"
            row.reason = f"{sym} does not exist in this {_version_str(version)} tree ({said}); dropped"
            if r.requested in ABSENT_NOTES:
                row.reason += f": {ABSENT_NOTES[r.requested]}"
            if r.requested in RENAMES and RENAMES[r.requested][0] in index.symbols:
                new = RENAMES[r.requested][0]
                row.reason += f"; it was renamed {new} upstream, and {new}={_norm(final.get(new))} in the result"
        elif ok:
            row.status = "renamed (stuck)" if r.how == "renamed" else "stuck"
            row.reason = f"applied as {sym} ({RENAMES[r.requested][0]} is the current name)" if r.how == "renamed" else ""
        elif s is not None:
            unmet = _why_unmet(s, final, index)
            if s.choice is not None and want == "y" and unmet is None:
                winner = [m for m in s.choice.members if _norm(final.get(m)) == "y" and m != sym]
                also = [w for w in winner if w in wanted]
                row.status = "lost to another choice"
                row.reason = (f"choice {'/'.join(s.choice.members)}: {', '.join(winner) or 'another member'}=y won"
                              + (f" (the table also asks for {', '.join(also)})" if also else "")
                              + ("" if r.how != "literal" else "; set the siblings off, or the later =y line wins"))
            elif unmet is not None:
                row.status, row.reason, row.depends = unmet
            elif r.how == "literal" and not s.has_prompt:
                m_ = index.get(f"{sym}_{r.value}")
                members = m_.choice.members if m_ is not None and m_.choice else []
                row.status = "no prompt"
                row.reason = (f"{sym} has no prompt: olddefconfig recomputes it from its default"
                              + (f" (the {'/'.join(members)} choice)" if members else ""))
            elif want == "n" and res in ("y", "m"):
                on = [f"{a}" for a, c in index.selected_by.get(sym, [])
                      if _norm(final.get(a)) in ("y", "m") and (c is None or evaluate(c, final) > 0)]
                row.status = "forced on"
                row.reason = f"selected by {', '.join(on)}" if on else "Kconfig keeps it on (a default without prompt)"
            elif want == "y" and res == "m":
                row.status = "module"
                row.reason = "built as a module: a dependency is =m"
            else:
                pc = [d.prompt_if for d in s.definitions if d.prompt_if]
                if pc and not any(evaluate(c, final) for c in pc):
                    row.status = "dependency unmet"
                    row.reason = f"its prompt is hidden: prompt only if {' / '.join(pc)}"
                else:
                    row.status = "changed"
                    row.reason = "Kconfig changed it (reason not determined); see its Kconfig entry"
            row.stuck = False
        if not row.depends and s is not None and not row.stuck:
            row.depends = "; ".join(s.depends_lines())
        row.notes = " · ".join(notes)
        out.append(row)
    return out


def rows_table(rows: list[ResultRow]):
    import pandas as pd

    cols = ["requested", "value", "applied_as", "base", "result", "stuck", "status", "reason", "depends", "notes"]
    return pd.DataFrame([r.as_dict() for r in rows], columns=cols)
