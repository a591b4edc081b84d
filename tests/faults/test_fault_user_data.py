"""Issue 16 #1: nothing is written into the user's data folder; discovery reads only tar shards; read-only data works."""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
from fault_data import listing, write_pool, write_shard

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.data.decode import SampleDecoder
from lightning_alchemist.data.index import index_path
from lightning_alchemist.data.mapstyle import ShardDataset
from lightning_alchemist.data.shards import expand_urls
from lightning_alchemist.data.transforms import CenterCropResize


def _decoder() -> SampleDecoder:
    return SampleDecoder(CenterCropResize(16))


def test_indexing_writes_nothing_beside_the_shards_and_globs_read_only_tars(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    urls = write_pool(data, num_shards=3, per_shard=4)
    # what a user's data folder holds beside the shards, including an index an older version wrote there
    pq.write_table(pa.table({"key": ["k00000"], "defect": ["clean"]}), data / "labels.parquet")
    (data / "meta.json").write_text("{}")
    pq.write_table(pa.table({"key": ["x"]}), data / "shard-000000.tar.index.parquet")
    before = listing(data)
    for spec in (f"{data}/*", str(data), [f"{data}/*"]):
        assert expand_urls(spec) == urls  # no .parquet, .json or index file is taken for a shard
    for _ in range(2):  # the second run reads the cached index; neither run adds files
        ds = ShardDataset(expand_urls(f"{data}/*"), _decoder())
        assert len(ds) == 12
    assert listing(data) == before
    for url in urls:
        assert index_path(url).is_file() and str(index_path(url)).startswith(str(tmp_path / "cache"))


def test_a_read_only_dataset_folder_works_in_both_styles(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "ro"
    write_pool(data, num_shards=2, per_shard=6)
    before = listing(data)
    for path in data.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    data.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # chmod -w
    try:
        for style in ("map", "iterable"):
            dm = T2IDataModule({"name": "wds", "urls": str(data), "val_fraction": 0.2, "image_size": 16, "batch_size": 2,
                                "style": style, "num_workers": 0})
            dm.prepare_data()
            batch = next(iter(dm.train_dataloader()))
            assert batch["image"].shape == (2, 3, 16, 16)
        assert listing(data) == before
    finally:
        data.chmod(stat.S_IRWXU)


def test_a_glob_over_the_data_folder_names_the_same_data_on_every_run(tmp_path, monkeypatch):
    """The issue's run: data.urls='/data/*' grew 23 -> 107 -> 191 'shards', retraining the rater every run."""
    from lightning_alchemist.config import data_config
    from lightning_alchemist.data.sources import data_identity

    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    write_pool(tmp_path / "data", num_shards=3, per_shard=4)
    cfg = {"name": "wds", "urls": f"{tmp_path / 'data'}/*", "val_fraction": 0.25, "image_size": 16}
    idents = []
    for _ in range(3):
        dm = T2IDataModule(cfg)
        dm.prepare_data()
        assert len(dm.source.pool_urls) == 3
        idents.append(data_identity(data_config(cfg)))
    assert idents[0] == idents[1] == idents[2]  # the stage fingerprints (rater, ratings) stay valid


def test_a_rewritten_shard_is_indexed_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    shard = write_shard(tmp_path / "d" / "s-000000.tar", ["a", "b"])
    assert ShardDataset([shard], _decoder()).keys == ["a", "b"]
    old_index = index_path(shard)
    write_shard(tmp_path / "d" / "s-000000.tar", ["a", "b", "c"])
    os.utime(shard, ns=(1, 1))  # a different mtime even on a coarse clock
    assert index_path(shard) != old_index
    assert ShardDataset([shard], _decoder()).keys == ["a", "b", "c"]
