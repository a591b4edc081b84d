"""Issue 16 #9: in ``style=iterable`` a truncated shard no longer turns off the key check and the epoch length."""

from __future__ import annotations

import math

import pytest
from fault_data import KeyRecorder, quiet_trainer, write_pool

from lightning_alchemist.callbacks import DataSelectionCallback
from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.sampling.webdataset import scan_tar_keys
from lightning_alchemist.selection import Selection


@pytest.mark.parametrize("cut", [0.45, 0.5, 0.62])
def test_key_scan_counts_what_the_index_counts_in_a_truncated_shard(tmp_path, monkeypatch, cut):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = write_pool(tmp_path / "data", num_shards=3, per_shard=10)
    data = open(urls[1], "rb").read()
    open(urls[1], "wb").write(data[: int(len(data) * cut)])
    truncated: list[str] = []
    keys = scan_tar_keys(urls, truncated)
    assert truncated == [urls[1]]
    dm = T2IDataModule({"name": "wds", "urls": urls, "val_fraction": 0.0, "image_size": 16})
    assert keys == dm.pool.keys and 20 < len(keys) < 30


def test_iterable_style_with_a_truncated_shard_keeps_the_key_check_and_the_epoch_length(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = write_pool(tmp_path / "data", num_shards=4, per_shard=10)
    data = open(urls[2], "rb").read()
    open(urls[2], "wb").write(data[: len(data) // 2])
    # a held-out validation split of the same shards: the stream's own split filter hides those keys
    dm = T2IDataModule({"name": "wds", "urls": urls, "val_fraction": 0.2, "image_size": 16, "batch_size": 2,
                        "style": "iterable", "num_workers": 0, "shuffle_buffer": 0})
    pool = dm.pool.keys
    assert 0 < len(dm.val) and len(pool) + len(dm.val) < 40
    # half of every key the shards should hold (40), as a selection made from ratings of the readable pool
    sel = Selection.from_keys([f"k{i:05d}" for i in range(0, 40, 2)], num_rated=len(pool), keep=0.5)
    cb = DataSelectionCallback(sel)
    model = KeyRecorder()
    with pytest.warns(UserWarning, match=r"1 of 4 shards are truncated or corrupt \(shard-000002.tar\)"):
        quiet_trainer(cb).fit(model, datamodule=dm)
    found = sorted(set(sel.keys.to_pylist()) & set(pool))
    assert cb.stats["found"] == len(found) and cb.stats["dataset_size"] == len(pool)  # was -1 and -1
    assert cb.stats["samples_per_epoch"] == len(found)
    assert not math.isnan(cb.stats["keep_ratio"]) and cb.stats["keep_ratio"] == pytest.approx(len(found) / len(pool))
    assert sorted(model.seen[0]) == found  # the epoch is one pass over the selected pool samples
