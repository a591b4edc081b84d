"""Train the rater with its proxy: ``python recipes/train_rater.py data=shapes out=DIR`` -> ``DIR/rater.ckpt``.

The proxy is ``rater.proxy`` (a conf/model entry, default star_tiny), not the target model.
Options: rater.meta_gradient=first_order|penalty|unrolled, rater.epochs=10, trainer.devices=2 ...
"""

import os
import sys

# recipes/select.py shadows the stdlib `select` module (needed by socket, logging, hydra) when
# this folder is first on sys.path: drop the folder before importing anything.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from lightning_alchemist.cli import hydra_main  # noqa: E402
from lightning_alchemist.rater.recipe import run_train_rater  # noqa: E402


@hydra_main("config")
def main(cfg):
    run_train_rater(cfg)


if __name__ == "__main__":
    main()
