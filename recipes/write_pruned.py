"""Write the pruned dataset back as webdataset shards, with the scores beside them.

    python recipes/write_pruned.py data=hpdv3 data.root=/data/HPDv3 selection=outputs/.../selection.parquet \
        ratings=outputs/cache/ratings/<fp>/ratings out=/data/hpdv3_pruned shard_size=10000

Writes ``out/pruned-000000.tar`` … (the kept samples, keys kept, ``rating`` and ``weight`` in each
``.json``), ``out/ratings.parquet`` (key, shard, rating, weight) and ``out/writeback.json``. Each shard
is written atomically; rerunning the same command after a kill skips finished shards.
"""

from pathlib import Path

from lightning_alchemist.cli import hydra_main
from lightning_alchemist.data.writeback import run_write_pruned, writeback_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def selection_override(argv: list[str]) -> list[str]:
    """``selection=PATH`` -> ``selection_path=PATH`` (``selection`` is a config group name in conf/)."""
    return [f"selection_path={a[len('selection='):]}" if a.startswith("selection=") else a for a in argv]


@hydra_main("write_pruned", CONF, check=writeback_config, rewrite_argv=selection_override)
def main(cfg):
    run_write_pruned(cfg)


if __name__ == "__main__":
    main()
