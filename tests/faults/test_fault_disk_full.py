"""Issue 16, the fault suite: a full disk while artifacts are written. The error is one line naming the file,
nothing half-written is left to be taken as done, and a rerun with space finishes the work."""

from __future__ import annotations

import errno

import numpy as np
import pyarrow.parquet as pq
import pytest
from fault_data import write_pool

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.data.writeback import write_pruned
from lightning_alchemist.errors import StorageError
from lightning_alchemist.pipeline.cache import cached_stage
from lightning_alchemist.rater.writer import finished_shards, write_ratings_file
from lightning_alchemist.selection import Ratings, Selection


@pytest.fixture
def full_disk(monkeypatch):
    """Parquet writes fail half-way with ENOSPC once ``state["full"]`` is set (what a full disk does)."""
    state = {"full": False, "calls": 0}
    original = pq.write_table

    def write_table(table, where, *args, **kwargs):
        if state["full"]:
            state["calls"] += 1
            with open(where, "wb") as fh:
                fh.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    return state


def test_a_full_disk_while_writing_ratings_selection_and_stage_marker(tmp_path, full_disk, monkeypatch):
    folder = tmp_path / "ratings"
    folder.mkdir()
    write_ratings_file(folder / "pool-000000.parquet", {"key": ["a", "b"], "rating": [0.1, 0.2]}, "fp")
    full_disk["full"] = True
    with pytest.raises(StorageError) as err:
        write_ratings_file(folder / "pool-000001.parquet", {"key": ["c"], "rating": [0.3]}, "fp")
    msg = str(err.value)
    assert "\n" not in msg and str(folder / "pool-000001.parquet") in msg and "No space left on device" in msg
    assert sorted(p.name for p in folder.iterdir()) == ["pool-000000.parquet"]  # no half file, no temp file
    assert finished_shards(folder, "fp") == {"pool-000000"}  # a rerun scores pool-000001 again

    sel = Selection.from_keys(["a", "b"], num_rated=2, keep=1.0)
    with pytest.raises(StorageError, match=r"cannot write .*selection\.parquet: No space left on device"):
        sel.write(tmp_path / "sel" / "selection.parquet")
    assert list((tmp_path / "sel").iterdir()) == []

    # a stage whose artifact cannot be written gets no marker: the next run builds it again
    def build(out):
        Selection.from_keys(["a"], num_rated=1, keep=1.0).write(out / "selection.parquet")
        return {"ok": True}

    with pytest.raises(StorageError):
        cached_stage(tmp_path / "cache", "selection", {"k": 1}, build)
    [stage_dir] = (tmp_path / "cache" / "selection").glob("*/")
    assert not (stage_dir / "stage.json").exists()
    full_disk["full"] = False
    again = cached_stage(tmp_path / "cache", "selection", {"k": 1}, build)
    assert not again.cached and Selection.read(again.path / "selection.parquet").keys.to_pylist() == ["a"]


def test_a_full_disk_during_write_back_keeps_finished_shards_and_the_rerun_completes(tmp_path, full_disk, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    urls = write_pool(tmp_path / "data", num_shards=2, per_shard=6)
    dm = T2IDataModule({"name": "wds", "urls": urls, "val_fraction": 0.0, "image_size": 16, "num_workers": 0})
    keys = dm.pool.keys
    sel = Selection.from_keys(keys, num_rated=len(keys), keep=1.0)
    ratings = Ratings.from_arrays(keys, np.arange(len(keys), dtype=np.float32))
    out = tmp_path / "pruned"
    calls = {"n": 0}

    def fill_after_first_shard(j, done):
        calls["n"] += 1
        full_disk["full"] = True  # the disk fills up after the first finished shard

    with pytest.raises(StorageError) as err:
        write_pruned(dm, sel, out, ratings=ratings, shard_size=4, workers=1, on_shard=fill_after_first_shard)
    assert "pruned-000001.tar.parquet" in str(err.value) and "\n" not in str(err.value)
    assert not list(out.rglob("*.tmp"))
    full_disk["full"] = False
    result = write_pruned(dm, sel, out, ratings=ratings, shard_size=4, workers=1)
    assert result.samples == len(keys) and result.reused_shards == 1
    table = pq.read_table(out / "ratings.parquet").to_pydict()
    assert sorted(table["key"]) == sorted(keys) and len(set(table["key"])) == len(keys)  # none twice, none missing


def test_a_rebuild_removes_the_temp_files_a_killed_build_left(tmp_path):
    """kill -9 between writing a temp file and renaming it leaves the temp: the next build of the stage clears it."""
    import os
    import time

    from lightning_alchemist.pipeline.cache import cached_stage, fingerprint

    key = {"what": "litter"}
    folder = tmp_path / "selection" / fingerprint(key)
    folder.mkdir(parents=True)
    stale = folder / "tmpabc.parquet.tmp"
    stale.write_text("half")
    old = time.time() - 3600
    os.utime(stale, (old, old))

    def build(out):
        fresh = out / "mine.parquet.tmp"  # a temp of this process (e.g. a DDP peer's) stays
        fresh.write_text("x")
        (out / "done.txt").write_text("ok")
        return {"ok": True}

    result = cached_stage(tmp_path, "selection", key, build)
    assert result.info["ok"] and not stale.exists() and (folder / "mine.parquet.tmp").exists()
