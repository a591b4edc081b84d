"""T2IDataModule: splits, loaders, scoring loader, and DDP behaviour with 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.data.predict_sampler import ShardPartitionSampler
from lightning_alchemist.data.split import HeldOutSplit
from lightning_alchemist.errors import DataError

SCRIPTS = Path(__file__).parent / "scripts"


def test_pool_and_validation_of_shapes(small_shapes):
    dm = small_shapes
    assert len(dm.pool) == 400 and len(dm.val) == 100
    assert not set(dm.pool.keys) & set(dm.val.keys)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 32, 32) and len(batch["caption"]) == 16
    assert batch["image"].dtype == torch.float32 and -1 <= batch["image"].min() and batch["image"].max() <= 1
    assert dm.labels_path is not None and dm.labels_path.exists()
    assert [s.num_samples for s in dm.pool_shards()] == [100] * 4


def test_predict_loader_yields_every_pool_sample_once_in_shard_order(small_shapes):
    keys = [k for b in small_shapes.predict_dataloader() for k in b["key"]]
    assert keys == small_shapes.pool.keys


def test_predict_loader_skips_finished_shards(small_shapes_cfg):
    dm = T2IDataModule(small_shapes_cfg)
    dm.skip_shards = {"pool-000001", "pool-000003"}
    keys = [k for b in dm.predict_dataloader() for k in b["key"]]
    shards = dm.pool_shards()
    expected = [k for i, k in enumerate(dm.pool.keys) if shards[dm.pool.shard_index_of(i)].stem not in dm.skip_shards]
    assert keys == expected and len(keys) == 200


def test_predict_batches_stay_within_a_shard_whatever_is_skipped(small_shapes_cfg):
    """A sample's batch mates (the contrast signal's caption partners) must not depend on skipped shards or ranks."""
    def batches(skip: set[str], world: int = 1, rank: int = 0) -> list[list[str]]:
        dm = T2IDataModule(small_shapes_cfg)
        dm.skip_shards = skip
        dm._world = lambda: (world, rank)
        return [list(b["key"]) for b in dm.predict_dataloader()]

    dm = T2IDataModule(small_shapes_cfg)
    shard_of = {k: dm.pool.shard_index_of(i) for i, k in enumerate(dm.pool.keys)}
    full = batches(set())
    assert all(len({shard_of[k] for k in b}) == 1 and len(b) <= 16 for b in full)
    assert [len(b) for b in full] == [16] * 6 + [4] + [16] * 6 + [4] + [16] * 6 + [4] + [16] * 6 + [4]
    resumed = batches({"pool-000000", "pool-000001"})
    assert resumed == [b for b in full if shard_of[b[0]] >= 2]
    rank1 = batches(set(), world=2, rank=1)
    assert rank1 == [b for b in full if shard_of[b[0]] % 2 == 1]


def test_shard_partition_is_disjoint_and_complete(small_shapes):
    parts = [list(ShardPartitionSampler(small_shapes.pool, num_replicas=3, rank=r)) for r in range(3)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(len(small_shapes.pool)))


def test_held_out_split_from_a_pool_without_val_shards(small_shapes):
    urls = "|".join(small_shapes.source.pool_urls)
    dm = T2IDataModule({"name": "wds", "urls": small_shapes.source.pool_urls, "val_fraction": 0.1, "image_size": 32})
    assert not set(dm.pool.keys) & set(dm.val.keys)
    assert len(dm.pool) + len(dm.val) == 400 and 20 < len(dm.val) < 65
    again = T2IDataModule({"name": "wds", "urls": small_shapes.source.pool_urls, "val_fraction": 0.1, "image_size": 32})
    assert again.val.keys == dm.val.keys  # seeded: the same split every time
    assert urls


def test_held_out_split_is_stable_and_seeded():
    split = HeldOutSplit(0.2, seed=1)
    keys = [f"k{i}" for i in range(5000)]
    share = sum(split.is_val(k) for k in keys) / len(keys)
    assert 0.18 < share < 0.22
    assert [split.is_val(k) for k in keys] == [HeldOutSplit(0.2, seed=1).is_val(k) for k in keys]
    assert [split.is_val(k) for k in keys] != [HeldOutSplit(0.2, seed=2).is_val(k) for k in keys]


def test_iterable_style_streams_the_pool(small_shapes_cfg):
    # without a sample shuffle buffer an epoch is exactly one pass over the pool
    dm = T2IDataModule({**small_shapes_cfg, "style": "iterable", "shuffle_buffer": 0})
    keys = [k for b in dm.train_dataloader() for k in b["key"]]
    assert len(keys) == 400 and set(keys) == set(dm.pool.keys)
    # with one, the epoch has the pool's length and only pool samples (passes mix at the edges)
    dm = T2IDataModule({**small_shapes_cfg, "style": "iterable"})
    keys = [k for b in dm.train_dataloader() for k in b["key"]]
    assert len(keys) == 400 and set(keys) <= set(dm.pool.keys) and len(set(keys)) > 250


def test_iterable_style_needs_a_shard_per_worker(small_shapes_cfg):
    dm = T2IDataModule({**small_shapes_cfg, "style": "iterable", "num_workers": 8})
    with pytest.raises(DataError, match="at least one shard per rank and worker"):
        dm.train_dataloader()


@pytest.mark.ddp
@pytest.mark.parametrize("style", ["map", "iterable"])
def test_ddp_two_processes_predict_once_and_train_disjoint(small_shapes, small_shapes_cfg, tmp_path, style):
    cfg = {**small_shapes_cfg, "style": style}
    env = {**os.environ, "LIGHTNING_ALCHEMIST_CACHE": small_shapes_cfg["cache_dir"], "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "ddp_data.py"), json.dumps(cfg), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    pool = set(ranks[0]["pool"])
    predicted = ranks[0]["predict"] + ranks[1]["predict"]
    assert sorted(predicted) == sorted(pool) and len(predicted) == len(pool)
    train0, train1 = set(ranks[0]["train"]), set(ranks[1]["train"])
    assert train0 and train1 and not train0 & train1
    assert len(ranks[0]["train"]) == len(ranks[1]["train"])  # ranks step equally
    assert (train0 | train1) <= pool
