"""Rater training under DDP (2 CPU processes, gloo): one backward per step keeps ranks in sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent / "rater_ddp_script.py"


@pytest.mark.ddp
def test_penalty_rater_trains_under_ddp_with_ranks_in_sync(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "penalty"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for name in a:  # rater, proxy and reference proxy: identical on both ranks (gradients averaged)
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert any(k.startswith("meta.reference.") for k in a)
