"""Score a pool with a trained rater: ``python recipes/score.py data=shapes rater=DIR/rater.ckpt out=DIR``.

Writes ``DIR/ratings/<shard>.parquet`` (key, rating); rerunning the same command after a crash
skips finished shards. Multi-device: trainer.devices=N trainer.strategy=ddp (SLURM/torchrun for
many nodes, with trainer.num_nodes).
"""

from pathlib import Path

from lightning_alchemist.cli import hydra_main
from lightning_alchemist.rater.recipe import rater_path_override, run_score

CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra_main("score", CONF, rewrite_argv=rater_path_override)
def main(cfg):
    run_score(cfg)


if __name__ == "__main__":
    main()
