"""Every notebooks/NN_*.ipynb agrees with its source notebooks/src/NN_*.py (`make notebooks` rebuilds them)."""
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
# docs/DEVELOPING.md, "Notebooks": what every parameters cell holds (papermill overrides these names)
PARAMETER_LINES = ('params_file = "parameters/default.yaml"', "run_dir = None", "plan = True")


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks == [p.stem for p in SOURCES]
    assert SOURCES  # an empty glob would leave nothing to compare


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_agrees_with_its_source(src):
    want = jupytext.read(src, fmt="py:percent")
    have = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
    cells = lambda nb: [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
    assert cells(have) == cells(want), f"notebooks/{src.stem}.ipynb is stale: run `make notebooks`"
    assert have.metadata.kernelspec.name == "synapse"
    tagged = [c for c in have.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is next(c for c in have.cells if c.cell_type == "code")
    assert all(line in tagged[0].source.splitlines() for line in PARAMETER_LINES), tagged[0].source
    # papermill's executed copy starts from these; a stray output would show up in every record
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in have.cells if c.cell_type == "code")
