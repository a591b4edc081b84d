"""Scoring to Parquet: the writer's contract, batch-independent ratings, resume after a kill, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lightning_alchemist.errors import AlchemistError
from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.module import RaterModule
from lightning_alchemist.rater.scoring import load_rater, score
from lightning_alchemist.rater.writer import FINGERPRINT_KEY, RatingWriter, finished_shards, write_ratings_file

from rater_toys import ToyProxy, ToyScoreData, collate, loader, make_samples



HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "scoring_script.py"
SMALL = {"network": {"depth": 1, "width": 32, "heads": 2, "head_hidden": 16}, "probe_size": 0}


def all_keys(dm: ToyScoreData) -> list[str]:
    return sorted(s["key"] for samples in dm.shards.values() for s in samples)


def read_all(ratings: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(ratings.glob("*.parquet")))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A briefly trained toy rater checkpoint that rebuilds its proxy from ``proxy_spec``."""
    torch.manual_seed(0)
    m = RaterModule(ToyProxy(), 48, 16, {**SMALL, "score": {"store_batch_rating": True}},
                    proxy_spec={"model": {"class": "rater_toys.ToyProxy", "kwargs": {}}})
    t = pl.Trainer(max_epochs=1, limit_train_batches=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    t.fit(m, PairedLoader(loader(make_samples(48, 0.5, 1, "p"), 16, True), loader(make_samples(48, 0, 2, "v"), 16)))
    path = tmp_path_factory.mktemp("rater") / "rater.ckpt"
    t.save_checkpoint(path)
    return path


def run_script(ckpt: Path, ratings: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(ckpt), str(ratings), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


# --------------------------------------------------------------------------- writer
class _FakeTrainer:
    pass


def test_writer_groups_rows_by_shard_dedupes_and_writes_atomically(tmp_path):
    w = RatingWriter(tmp_path, "fp1", expected={"a": 3}, skip={"done"})
    w.setup(None, None, "predict")
    batches = [
        {"key": ["a1", "a2"], "shard": ["/x/a.tar"] * 2, "rating": torch.tensor([1.0, 2.0])},
        {"key": ["a3", "b1", "b1"], "shard": ["/x/a.tar", "/x/b.tar", "/x/b.tar"], "rating": torch.tensor([3.0, 4.0, 5.0])},
        {"key": ["d1", "c1"], "shard": ["/x/done.tar", "/x/c.tar"], "rating": torch.tensor([6.0, 7.0])},
    ]
    for i, b in enumerate(batches):
        w.write_on_batch_end(None, None, b, None, b, i, 0)
        if i == 0:
            assert not list(tmp_path.iterdir())  # shard a incomplete: nothing on disk yet
        if i == 1:
            assert (tmp_path / "a.parquet").exists()  # a reached its expected count
    w.on_predict_epoch_end(None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    b = pq.read_table(tmp_path / "b.parquet")
    assert b.column("key").to_pylist() == ["b1"] and b.column("rating").to_pylist() == [4.0]  # first kept
    assert b.schema.field("key").type == pa.string() and b.schema.field("rating").type == pa.float32()
    assert b.schema.metadata[FINGERPRINT_KEY] == b"fp1"
    assert w.rows_written == 5 and w.rows_skipped == 2
    assert finished_shards(tmp_path, "fp1") == {"a", "b", "c"}
    with pytest.raises(AlchemistError, match="another rater"):
        finished_shards(tmp_path, "fp2")
    assert finished_shards(tmp_path, "fp2", overwrite=True) == set()


def test_write_ratings_file_leaves_no_temp(tmp_path):
    write_ratings_file(tmp_path / "s.parquet", {"key": ["k"], "rating": [0.5], "rating_batch": [1.0]}, "f")
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]
    assert pq.read_table(tmp_path / "s.parquet").column_names == ["key", "rating", "rating_batch"]


# --------------------------------------------------------------------------- in-process scoring
def test_score_one_device_every_key_once_ratings_batch_independent(ckpt, tmp_path):
    rater = load_rater(ckpt)
    dm = ToyScoreData(batch_size=8)
    info = score(rater, dm, tmp_path / "ratings", trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    table = read_all(tmp_path / "ratings")
    assert sorted(table.column("key").to_pylist()) == all_keys(dm)
    assert info["rows"] == len(all_keys(dm)) and len(info["written_shards"]) == len(dm.shards)
    # each stored rating is the sample's own instance logit: scoring it alone gives the same value
    rater.eval()
    stored = dict(zip(table.column("key").to_pylist(), table.column("rating").to_pylist()))
    samples = dm.shards["shard-0003"][:5]
    with torch.no_grad():
        alone = [float(rater.rate(rater.proxy.rater_inputs(rater.proxy.encode(collate([s]))))) for s in samples]
    assert alone == pytest.approx([stored[s["key"]] for s in samples], abs=1e-5)
    # the batch-relative extra column exists and is not the rating
    assert "rating_batch" in table.column_names
    # the selection engineer's reader accepts the artifact and refuses a duplicate
    ratings_mod = pytest.importorskip("lightning_alchemist.selection.ratings")
    assert len(ratings_mod.Ratings.read(tmp_path / "ratings", expected_keys=all_keys(dm))) == len(all_keys(dm))
    # a rerun with the same rater skips everything
    again = score(rater, ToyScoreData(batch_size=8), tmp_path / "ratings",
                  trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    assert again["rows"] == 0 and len(again["skipped_shards"]) == len(dm.shards)


def test_load_rater_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(AlchemistError, match="train_rater.py"):
        load_rater(tmp_path / "nope.ckpt")


# --------------------------------------------------------------------------- subprocesses
def test_killed_scoring_resumes_without_duplicates(ckpt, tmp_path):
    ratings = tmp_path / "ratings"
    proc = run_script(ckpt, ratings, "--sleep", "0.4", start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(ratings.glob("*.parquet"))) < 2:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in ratings.glob("*.parquet")}
    dm = ToyScoreData()
    assert 2 <= len(first) < len(dm.shards), first
    out = run_script(ckpt, ratings)
    stdout, _ = out.communicate(timeout=120)
    assert out.returncode == 0, stdout
    assert f"skipped {len(first)}" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in ratings.glob("*.parquet") if p.name in first} == first  # untouched
    keys = read_all(ratings).column("key").to_pylist()
    assert sorted(keys) == all_keys(dm)  # every key exactly once
    assert not list(ratings.glob("*.tmp"))


@pytest.mark.ddp
def test_ddp_two_cpu_processes_write_every_key_once(ckpt, tmp_path):
    ratings = tmp_path / "ratings"
    proc = run_script(ckpt, ratings, "--devices", "2")
    stdout, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, stdout
    assert stdout.count("rank-done") == 2, stdout
    keys = read_all(ratings).column("key").to_pylist()
    assert sorted(keys) == all_keys(ToyScoreData())


def test_fingerprint_names_weights_and_preprocessing():
    from lightning_alchemist.rater.fingerprint import scoring_fingerprint

    torch.manual_seed(0)
    a = RaterModule(ToyProxy(), 48, 16, SMALL)
    torch.manual_seed(0)
    b = RaterModule(ToyProxy(), 48, 16, SMALL)
    assert scoring_fingerprint(a, {"image_size": 32}) == scoring_fingerprint(b, {"image_size": 32})
    assert scoring_fingerprint(a, {"image_size": 32}) != scoring_fingerprint(a, {"image_size": 64})
    with torch.no_grad():
        b.rater.instance_head.net[0].weight.add_(1e-3)
    assert scoring_fingerprint(a, {"image_size": 32}) != scoring_fingerprint(b, {"image_size": 32})
