#!/usr/bin/env python3
"""A benchmark of the project itself (not a timed test): the blueprint's llama-bench command,
llama.cpp's defaults and the runbook's chosen configuration, measured interleaved on this
machine, printed as tg and pp ratios with 95% confidence intervals.

    .venv/bin/python bench/three_way.py [--params parameters/default.yaml] [--quick] [--from RUN_DIR]

Same as `aios bench`. Run it on an otherwise idle machine: other load collapses 2-thread results.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aios_lib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
