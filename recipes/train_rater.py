"""Train the rater with its proxy: ``python recipes/train_rater.py data=shapes out=DIR`` -> ``DIR/rater.ckpt``.

The proxy is ``rater.proxy`` (a conf/model entry, default star_tiny), not the target model.
Options: rater.meta_gradient=first_order|penalty|unrolled, rater.epochs=10, trainer.devices=2 ...
"""

from pathlib import Path

from lightning_alchemist.cli import hydra_main
from lightning_alchemist.rater.recipe import run_train_rater
from lightning_alchemist.schema import validate

CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra_main("config", CONF, check=validate)
def main(cfg):
    run_train_rater(cfg)


if __name__ == "__main__":
    main()
