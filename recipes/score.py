"""Score a pool with a trained rater: ``python recipes/score.py data=shapes rater=DIR/rater.ckpt out=DIR``.

Writes ``DIR/ratings/<shard>.parquet`` (key, rating); rerunning the same command after a crash
skips finished shards. Multi-device: trainer.devices=N trainer.strategy=ddp (SLURM/torchrun for
many nodes, with trainer.num_nodes).
"""

import os
import sys

# recipes/select.py shadows the stdlib `select` module (needed by socket, logging, hydra) when
# this folder is first on sys.path: drop the folder before importing anything.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from lightning_alchemist.cli import hydra_main  # noqa: E402
from lightning_alchemist.rater.recipe import rater_path_override, run_score  # noqa: E402


@hydra_main("score")
def main(cfg):
    run_score(cfg)


if __name__ == "__main__":
    sys.argv[1:] = rater_path_override(sys.argv[1:])
    main()
