"""Prune a rated pool: ``python recipes/select_data.py ratings=DIR/ratings selection=shift_gauss keep=0.5 out=DIR``.

Writes ``DIR/selection.parquet`` (keys, weights, provenance) and ``DIR/selection_histogram.png``.
"""

from pathlib import Path

from lightning_alchemist.cli import hydra_main
from lightning_alchemist.selection.recipe import run_select

CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra_main("select", CONF)
def main(cfg):
    run_select(cfg)


if __name__ == "__main__":
    main()
