"""Issue 16, the fault suite: a 2-rank DDP training whose rank 1 is killed (kill -9). The survivor does not hang: it
stops with one clear line within seconds; a rerun continues from the last checkpoint and finishes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

DRIVER = Path(__file__).with_name("ddp_kill_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def drive(out: Path, **env_extra: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT), **env_extra}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR", "NODE_RANK"):
        env.pop(var, None)
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(DRIVER), str(out)], capture_output=True, text=True, env=env, timeout=300, cwd=out.parent)
    return proc, time.time() - t0


@pytest.mark.ddp
@pytest.mark.slow
def test_a_killed_rank_stops_the_survivor_with_one_line_and_the_rerun_finishes(tmp_path):
    out = tmp_path / "run"
    killed, seconds = drive(out, KILL_RANK="1", KILL_AT="3")
    log = killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "rank 1: killed at step 3" in killed.stdout, log
    assert killed.returncode != 0, log
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "another process of this 2-process run stopped" in errors[0] and "resume=auto" in errors[0], log
    last = out / "train" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    done, _ = drive(out)
    assert done.returncode == 0 and "DDP DONE steps=6" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming target training from" in done.stdout
