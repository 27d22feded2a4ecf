#!/usr/bin/env python3
"""A benchmark of the project itself (not a timed test): Synapse against stock llama.cpp on this
machine, decomposed into build, runtime flags and system settings, measured in interleaved rounds
until the headline ratio's CI is narrow enough or the budget ends; prints the findings.

    .venv/bin/python bench/stock_vs_synapse.py [--params parameters/default.yaml] [--budget SECONDS]
    .venv/bin/python bench/stock_vs_synapse.py --from outputs/<machine>/<run-id>    # print a record's verdict

Same as `aios bench`. Run it on an otherwise idle machine: other load collapses 2-thread results.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aios_lib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
