"""Issue 16 #4: ratings that miss part of the pool are an error naming the shards (or, when allowed, a warning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fault_data import KeyedItems, KeyRecorder, collate, quiet_trainer
from torch.utils.data import DataLoader, Dataset

from lightning_alchemist.callbacks import DataSelectionCallback
from lightning_alchemist.errors import DataError
from lightning_alchemist.selection import Ratings, ShiftGaussian
from lightning_alchemist.selection.ratings import check_ratings_cover

SHARDS, PER = 11, 20


def pool() -> dict[str, list[str]]:
    return {f"pool-{s:06d}": [f"k{s:02d}_{i:03d}" for i in range(PER)] for s in range(SHARDS)}


def write_ratings(folder, shards: list[str]) -> None:
    rng = np.random.default_rng(0)
    for stem in shards:
        keys = pool()[stem]
        Ratings.from_arrays(keys, rng.standard_normal(len(keys))).write(folder, stem=stem)


def test_ratings_missing_shards_are_an_error_that_names_them_and_how_to_resume(tmp_path):
    write_ratings(tmp_path / "ratings", ["pool-000000", "pool-000001", "pool-000002"])  # scoring killed after 3 of 11
    with pytest.raises(DataError) as err:
        Ratings.read(tmp_path / "ratings", pool=pool())
    msg = str(err.value)
    assert "\n" not in msg
    assert "60 of 220 pool samples (27.3%) are rated" in msg
    assert "8 of 11 shards have no rating (pool-000003, pool-000004, pool-000005 and 5 more)" in msg
    assert f"recipes/score.py rater=RATER.ckpt data=... out={tmp_path}` (it resumes" in msg
    assert "allow_partial_ratings" in msg
    with pytest.warns(UserWarning, match=r"effective keep 0\.136 of the pool instead of 0\.5"):
        r = Ratings.read(tmp_path / "ratings", pool=pool(), allow_partial_ratings=True, keep=0.5)
    assert len(r) == 60
    write_ratings(tmp_path / "ratings", list(pool()))  # finished scoring: no error
    assert check_ratings_cover(Ratings.read(tmp_path / "ratings"), pool()).complete


def test_a_few_undecodable_samples_are_not_missing_shards():
    keys = [k for ks in pool().values() for k in ks]
    rated = keys[:7] + keys[8:]  # one image of 220 could not be decoded while scoring
    cov = check_ratings_cover(Ratings.from_arrays(rated, np.zeros(len(rated))), pool())
    assert cov.complete and cov.partial_shards == [("pool-000000", 19, 20)]
    half = keys[: PER // 2] + keys[PER:]  # half of one shard: more than the 1% tolerance
    with pytest.raises(DataError, match=r"1 shards are partly rated \(e\.g\. pool-000000 10/20\)"):
        check_ratings_cover(Ratings.from_arrays(half, np.zeros(len(half))), pool())


class ShardedKeys(KeyedItems, Dataset):
    """A map-style dataset with keys grouped in shards (like ``ShardDataset``)."""

    def __init__(self) -> None:
        self.by_shard = pool()
        self.keys = [k for ks in self.by_shard.values() for k in ks]

    def keys_by_shard(self) -> dict[str, list[str]]:
        return self.by_shard


def module() -> KeyRecorder:
    m = KeyRecorder()
    m.train_dataloader = lambda: DataLoader(ShardedKeys(), batch_size=8, collate_fn=collate)
    return m


def test_training_on_a_selection_from_partial_ratings_is_refused_unless_allowed():
    partial_keys = [k for s in ("pool-000000", "pool-000001", "pool-000002") for k in pool()[s]]
    partial = Ratings.from_arrays(partial_keys, np.random.default_rng(1).standard_normal(len(partial_keys)))
    sel = ShiftGaussian().select(partial, 0.5, seed=0)  # what select_stage writes from ratings= of 3 shard files
    with pytest.raises(DataError, match=r"drawn from ratings of 60 samples but the dataset holds 220 .* keeps 0\.136 of it "
                                        r"instead of keep=0\.5; 8 shards hold no selected key, likely unrated \(pool-000003"):
        quiet_trainer(DataSelectionCallback(sel)).fit(module())
    with pytest.warns(UserWarning, match="allow_partial_ratings"):
        m = module()
        quiet_trainer(DataSelectionCallback(sel, allow_partial_ratings=True)).fit(m)
    assert sorted(m.seen[0]) == sorted(sel.keys.to_pylist())
    # given the ratings themselves, the callback checks them per shard
    with pytest.raises(DataError, match=r"8 of 11 shards have no rating \(pool-000003"):
        quiet_trainer(DataSelectionCallback(partial, strategy=ShiftGaussian(), keep=0.5)).fit(module())
    full = [k for ks in pool().values() for k in ks]
    sel_full = ShiftGaussian().select(Ratings.from_arrays(full, np.arange(len(full), dtype=float)), 0.5)
    quiet_trainer(DataSelectionCallback(sel_full)).fit(module())  # complete ratings: no complaint
