"""Issue 16 #7: duplicate keys across shards are found when shards are indexed, naming the shards, and not counted."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
from fault_data import write_shard

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.data.decode import SampleDecoder
from lightning_alchemist.data.mapstyle import ShardDataset
from lightning_alchemist.data.stream import make_stream
from lightning_alchemist.data.transforms import CenterCropResize
from lightning_alchemist.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def dup_shards(folder: Path) -> list[str]:
    """Three shards; 'k01' is in a and c, 'k05' in b and c, 'k02' in a, b and c; 9 distinct keys in 13 samples."""
    return [
        write_shard(folder / "a-000000.tar", ["k00", "k01", "k02", "k03"]),
        write_shard(folder / "b-000001.tar", ["k04", "k05", "k06", "k02"]),
        write_shard(folder / "c-000002.tar", ["k07", "k01", "k05", "k08", "k02"]),
    ]


def test_duplicates_are_found_while_indexing_named_once_and_not_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = dup_shards(tmp_path / "data")
    decoder = SampleDecoder(CenterCropResize(16))
    with caplog.at_level(logging.WARNING, logger="lightning_alchemist.data.mapstyle"):
        ds = ShardDataset(urls, decoder)
    lines = [r.getMessage() for r in caplog.records if "more than one shard" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    # in the order of their first copies
    assert ("3 keys appear in more than one shard ('k01' in a-000000.tar, c-000002.tar; "
            "'k02' in a-000000.tar, b-000001.tar, c-000002.tar; 'k05' in b-000001.tar, c-000002.tar)") in lines[0]
    assert "4 later copies are not counted" in lines[0]
    assert len(ds) == 9 and len(set(ds.keys)) == 9
    assert [s.num_samples for s in ds.shards] == [4, 3, 2]
    assert ds.index_stats.counts["duplicate_key"] == 4
    # the streaming style skips the same copies: each key once, the first copy (its shard)
    streamed = {s["key"]: s["shard"] for s in make_stream(urls, decoder, exclude=ds.skipped_duplicates)}
    assert len(streamed) == 9 and sorted(streamed) == sorted(ds.keys)
    assert streamed["k01"].endswith("a-000000.tar") and streamed["k05"].endswith("b-000001.tar")
    with pytest.raises(DataError, match=r"3 keys appear in more than one shard .*4 later copies would be read twice"):
        ShardDataset(urls, decoder, duplicates="error")


def test_the_datamodule_finds_them_before_any_training_and_streams_each_key_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = dup_shards(tmp_path / "data")
    dm = T2IDataModule({"name": "wds", "urls": urls, "val_fraction": 0.0, "image_size": 16, "batch_size": 1,
                        "style": "iterable", "num_workers": 0, "shuffle_buffer": 0})
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()  # what the pipeline runs first, before the rater
    assert "3 keys appear in more than one shard" in caplog.text
    keys = [k for b in dm.train_dataloader() for k in b["key"]]
    assert sorted(keys) == sorted(dm.pool.keys) and len(keys) == 9
    strict = T2IDataModule({"name": "wds", "urls": urls, "val_fraction": 0.0, "image_size": 16}, duplicates="error")
    with pytest.raises(DataError, match="'k02' in a-000000.tar, b-000001.tar, c-000002.tar"):
        strict.prepare_data()


def test_prepare_does_not_count_duplicates_as_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    from helpers import compose

    dup_shards(tmp_path / "data")
    from helpers import load_recipe

    recipe = load_recipe("prepare")
    cfg = compose("config", ["data=wds", f"data.urls={tmp_path / 'data'}", "data.val_fraction=0.0",
                             "data.image_size=16", "data.num_workers=0", f"out={tmp_path / 'out'}"])
    summary = recipe.main.task(cfg)
    printed = capsys.readouterr().out
    assert summary["pool_samples"] == 9 and "pool: 9 samples in 3 shards" in printed
    assert summary["skipped_while_indexing"] == {"duplicate_key": 4}
    assert json.loads((tmp_path / "out" / "data_summary.json").read_text())["pool_samples"] == 9
