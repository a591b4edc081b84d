"""Issue 16 #12 (data and metadata part): seeded DataLoader workers; the thread count recorded with ratings and selections."""

from __future__ import annotations

import numpy as np
import torch
from fault_data import write_pool
from torch.utils.data import DataLoader, Dataset

from lightning_alchemist.data.datamodule import T2IDataModule, seed_worker
from lightning_alchemist.rater.writer import write_ratings_file
from lightning_alchemist.selection import Ratings, ShiftGaussian


class NumpyNoise(Dataset):
    """A dataset whose items use numpy's global RNG (as user augmentations often do)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple:
        import torch.utils.data as tud

        return tud.get_worker_info().id, float(np.random.rand())


def draws(seed: int) -> list:
    loader = DataLoader(NumpyNoise(), batch_size=None, num_workers=2, worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(seed))
    return list(loader)


def test_seeded_workers_repeat_their_random_draws_and_differ_from_each_other():
    first, again = draws(0), draws(0)
    assert first == again
    by_worker = {w: [x for ww, x in first if ww == w] for w in (0, 1)}
    assert by_worker[0] != by_worker[1]  # each worker has its own stream (forked workers used to share one)
    assert draws(1) != first


def test_datamodule_loaders_are_seeded(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = write_pool(tmp_path / "data", num_shards=2, per_shard=8)
    cfg = {"name": "wds", "urls": urls, "val_fraction": 0.0, "image_size": 16, "batch_size": 4, "num_workers": 2}
    orders = []
    for _ in range(2):
        loader = T2IDataModule(cfg, seed=5).train_dataloader()
        assert loader.worker_init_fn is seed_worker
        orders.append([k for b in loader for k in b["key"]])
    assert orders[0] == orders[1] and len(orders[0]) == 16


def test_thread_count_is_recorded_in_ratings_and_selection_metadata(tmp_path):
    keys = [f"k{i:03d}" for i in range(50)]
    write_ratings_file(tmp_path / "pool-000000.parquet", {"key": keys, "rating": np.linspace(0, 1, 50)}, "fp")
    ratings = Ratings.read(tmp_path)
    assert ratings.scoring_threads == [torch.get_num_threads()]
    sel = ShiftGaussian().select(ratings, 0.5)
    assert sel.meta["scoring_torch_threads"] == [torch.get_num_threads()]
    assert sel.meta["torch_threads"] == torch.get_num_threads()
