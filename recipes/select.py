"""Prune a rated pool: ``python recipes/select.py ratings=DIR/ratings selection=shift_gauss keep=0.5 out=DIR``.

Writes ``DIR/selection.parquet`` (keys, weights, provenance) and ``DIR/selection_histogram.png``.
"""

import os
import sys

# This file is named like the stdlib `select` module, and Python puts its folder first on
# sys.path: drop it so `import select` (socket, subprocess, ...) finds the real one.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from lightning_alchemist.cli import hydra_main  # noqa: E402
from lightning_alchemist.selection.recipe import run_select  # noqa: E402


@hydra_main("select")
def main(cfg):
    run_select(cfg)


if __name__ == "__main__":
    main()
