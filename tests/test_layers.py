"""The folders of aios_lib import only downward (the map in docs/DEVELOPING.md): a module imports
its own folder or a folder on a lower row, never one above it or beside it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "aios_lib"

#: top row first; the entry row's modules may import each other (cli runs execute)
ROWS = [["cli", "execute", "context", "index", "lab", "resume", "__init__"], ["fleet"], ["benchmark", "service"], ["kernel"],
        ["system", "runtime"], ["measure"], ["settings"], ["facts", "params"], ["core"]]
#: beside the rows: the panel reads facts and the server client, and only the entry row starts it
SIDE = {"panel": {"core", "facts", "measure"}}


def _imports(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("")
    pkg = ["aios_lib", *rel.parts[:-1]]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = pkg[: len(pkg) - (node.level - 1)]
            if node.module:
                out.append(".".join([*base, node.module]))
            else:
                out += [".".join([*base, a.name]) for a in node.names]
        elif (node.module or "").startswith("aios_lib"):
            out.append(node.module)
    return out


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations() -> list[tuple[str, str]]:
    rank = {f: i for i, row in enumerate(ROWS) for f in row}
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        me = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for target in _imports(path):
            other = _folder(target)
            if other == me or (other not in rank and other not in SIDE):
                continue
            if me in SIDE:
                ok = other in SIDE[me]
            elif other in SIDE:
                ok = rank[me] == 0
            else:
                ok = rank[other] > rank[me] or rank[me] == rank[other] == 0
            if not ok:
                bad.append((str(rel), target))
    return bad


def test_every_folder_is_on_the_map():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {f for row in ROWS for f in row} - {"cli", "execute", "context", "index", "lab", "resume", "__init__"} | set(SIDE)


def test_imports_point_down_only():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "aios_lib"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "__init__.py").write_text("")
    (fake / "core" / "x.py").write_text("from ..benchmark import proof\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert violations() == [("core/x.py", "aios_lib.benchmark")]


def test_the_map_in_developing_md_names_every_row():
    text = (ROOT.parent / "docs" / "DEVELOPING.md").read_text()
    for row in ROWS[1:]:
        for folder in row:
            assert f"{folder}/" in text, folder
