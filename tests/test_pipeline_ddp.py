"""The main recipe under Lightning DDP with 2 CPU processes (gloo): the selection trains on both ranks, rank 0 reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_pipeline import TOY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ddp
def test_pipeline_under_ddp_two_cpu_processes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train.py"), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "selection=random", "keep=0.5", "features.use=on", f"out={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", *TOY],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = list(tmp_path.glob("**/report/metrics.json"))
    assert len(reports) == 1, reports  # one run dir: the child rank reused rank 0's Hydra run dir
    report = json.loads(reports[0].read_text())
    assert report["train"]["steps"] == 4 and report["train"]["samples_seen"] == 4 * 8 * 2
    assert report["train"]["selection"]["found"] == 500
    # features.use=on: the target alone gets an encode stage (both ranks encode their shards) and trains from it
    assert report["train"]["features"] is True and "features_target" in report["stages"]
    assert report["metrics"]["val_loss"] > 0
    assert proc.stdout.count("report:") == 1  # only rank 0 prints the results
