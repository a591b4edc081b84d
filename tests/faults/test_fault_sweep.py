"""Issue 16 #8 (sweeps): a job that fails at run time prints one line, the sweep goes on, the comparison table holds
the finished jobs, and the sweep ends with status 2 naming the failed job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fault_data import toy_shards

from lightning_alchemist.data.datamodule import T2IDataModule
from lightning_alchemist.selection import Ratings

ROOT = Path(__file__).resolve().parents[2]
TOY = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
       "eval.num_prompts=4", "eval.fid_real=16", "eval.val_batches=1", "eval.grid_images=4"]


@pytest.mark.slow
def test_a_failing_sweep_job_keeps_the_others_and_their_comparison_table(tmp_path):
    data, pool_urls, val_urls = toy_shards()
    pool = T2IDataModule({"name": "wds", "urls": pool_urls, "val_urls": val_urls}).pool.keys_by_shard()
    [first, *_] = sorted(pool)
    partial = tmp_path / "ratings"  # a killed scoring run: one of the two pool shards rated
    Ratings.from_arrays(pool[first], np.arange(len(pool[first]), dtype=np.float32)).write(partial, stem=first)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    # keep=1.0 trains on all data (reads no rating); keep=0.5 needs the ratings to cover the pool: it fails at run time
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py"), "-m", "keep=1.0,0.5", f"ratings={partial}",
                           f"out={tmp_path}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TOY, *data],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith("error: sweep job 1 (") and "1 of 2 shards have no rating" in line for line in errors), errors
    assert errors[-1].startswith("error: 1 sweep job(s) failed, the comparison holds the others: job 1"), errors
    rows = json.loads((tmp_path / "sweep" / "comparison.json").read_text())
    assert [(r["run"], r["keep"]) for r in rows] == [("0", 1.0)]
    assert "Traceback" not in proc.stderr
