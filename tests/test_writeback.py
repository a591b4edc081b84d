"""Writing the pruned set back (recipes/write_pruned.py): exact keys with plain webdataset, atomic and resumable shards."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

import layout_fixtures as F
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings

ROOT = Path(__file__).resolve().parents[1]


def _datamodule(root: Path):
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule({"name": "laion", "root": str(root), "num_workers": 0, "val_fraction": 0.1})
    dm.setup("fit")
    return dm


def _inputs(tmp_path: Path):
    F.make_laion(tmp_path / "laion", shards=3, per_shard=20)
    dm = _datamodule(tmp_path / "laion")
    keys = sorted(dm.pool.keys)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(keys, size=len(keys) // 2, replace=False).tolist())
    selection = Selection.from_keys(chosen, weights=rng.uniform(0.5, 2.0, len(chosen)))
    ratings = Ratings.from_arrays(keys, rng.normal(size=len(keys)))
    return dm, selection, ratings


def _read_back(out: Path) -> list[dict]:
    ds = wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False, empty_check=False)
    return list(ds)


def _check_exact(out: Path, selection: Selection, ratings: Ratings) -> None:
    samples = _read_back(out)
    keys = [s["__key__"] for s in samples]
    assert Counter(keys) == Counter(selection.keys.to_pylist())  # every selected key once: none missing, none twice
    weight = dict(zip(selection.keys.to_pylist(), selection.weights.tolist()))
    rating = dict(zip(ratings.keys.to_pylist(), ratings.ratings.tolist()))
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["weight"] == pytest.approx(weight[s["__key__"]]) and meta["rating"] == pytest.approx(rating[s["__key__"]])
        assert meta["key"] == s["__key__"] and "AESTHETIC_SCORE" in meta  # the source metadata travels on
        assert s["jpg"][:2] == b"\xff\xd8" and s["txt"]
    table = pq.read_table(out / "ratings.parquet").to_pydict()
    assert Counter(table["key"]) == Counter(keys)
    by_shard = {p.name: {s["__key__"] for s in wds.WebDataset(str(p), shardshuffle=False)} for p in out.glob("*.tar")}
    assert all(k in by_shard[shard] for k, shard in zip(table["key"], table["shard"]))
    assert not list(out.glob("*.tmp")) and json.loads((out / "writeback.json").read_text())["complete"] is True


def test_write_back_holds_exactly_the_selected_keys(tmp_path, cache_dir):
    from lightning_alchemist.data.writeback import write_pruned

    dm, selection, ratings = _inputs(tmp_path)
    result = write_pruned(dm, selection, tmp_path / "out", ratings=ratings, shard_size=4, workers=2)
    _check_exact(tmp_path / "out", selection, ratings)
    sizes = sorted(len(list(wds.WebDataset(str(tmp_path / "out" / s), shardshuffle=False))) for s in result.shards)
    assert sizes[1:] == [4] * (len(sizes) - 1) and result.samples == len(selection)
    # source order is kept: keys ascend through the shards as in img2dataset's numbering
    assert [s["__key__"] for s in _read_back(tmp_path / "out")] == sorted(selection.keys.to_pylist())


def _killed_run(dm, selection, ratings, out: Path) -> None:
    from lightning_alchemist.data.writeback import write_pruned

    def die(j: int, done: int) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill, between two shards

    write_pruned(dm, selection, out, ratings=ratings, shard_size=3, workers=1, on_shard=die)


def test_killed_then_rerun_has_no_duplicate_and_no_missing_key(tmp_path, cache_dir):
    from lightning_alchemist.data.writeback import PARTS, write_pruned

    dm, selection, ratings = _inputs(tmp_path)
    out = tmp_path / "out"
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(dm, selection, ratings, out))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    finished = sorted(p.name for p in out.glob("*.tar"))
    assert len(finished) == 3 and not (out / "ratings.parquet").exists()
    # what a kill inside the next shard leaves: a temp file, and a shard renamed but not yet marked done
    (out / "pruned-000003.tar.4242.tmp").write_bytes(b"partial")
    (out / "pruned-000004.tar").write_bytes(b"renamed, but its ratings part was never written")
    result = write_pruned(dm, selection, out, ratings=ratings, shard_size=3, workers=2)
    assert result.reused_shards == 3 and len(list((out / PARTS).glob("*.parquet"))) == len(result.shards)
    _check_exact(out, selection, ratings)
    # a different selection into the same folder is refused, not mixed in
    other = Selection.from_keys(selection.keys.to_pylist()[:5])
    with pytest.raises(DataError, match="another selection"):
        write_pruned(dm, other, out, shard_size=3, workers=1)


def test_write_back_never_writes_into_the_source(tmp_path, cache_dir):
    from lightning_alchemist.data.writeback import write_pruned

    dm, selection, _ = _inputs(tmp_path)
    with pytest.raises(ConfigError, match="inside the source"):
        write_pruned(dm, selection, tmp_path / "laion" / "pruned", workers=1)
    with pytest.raises(DataError, match="none of its"):
        write_pruned(dm, Selection.from_keys(["not-a-key"]), tmp_path / "out", workers=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "someone-elses.tar").write_bytes(b"")
    with pytest.raises(ConfigError, match="not empty"):
        write_pruned(dm, selection, tmp_path / "busy", workers=1)


def test_write_pruned_recipe(tmp_path, cache_dir):
    """The command line: a folder dataset, a selection from recipes/select_data.py-like output, no ratings."""
    F.make_folder(tmp_path / "imgs")
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule({"name": "folder", "root": str(tmp_path / "imgs"), "num_workers": 0})
    dm.setup("fit")
    chosen = sorted(dm.pool.keys)[::2]
    Selection.from_keys(chosen).write(tmp_path / "sel" / "selection.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "recipes" / "write_pruned.py"), "data=folder", f"data.root={tmp_path / 'imgs'}",
           f"selection={tmp_path / 'sel' / 'selection.parquet'}", f"out={tmp_path / 'pruned'}", "shard_size=5", "workers=1"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "write-back: wrote" in run.stdout
    keys = [s["__key__"] for s in _read_back(tmp_path / "pruned")]
    assert sorted(keys) == chosen
    meta = json.loads(next(iter(_read_back(tmp_path / "pruned")))["json"])
    assert meta["rating"] is None and meta["weight"] == 1.0 and "aesthetic" in meta
    bad = subprocess.run(cmd[:2] + ["data=folder", f"data.root={tmp_path / 'imgs'}", f"out={tmp_path / 'x'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "selection" in bad.stderr
