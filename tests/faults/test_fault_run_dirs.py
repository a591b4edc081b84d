"""Issue 16 #5: two runs started in the same second get their own run folders (report, overrides and all)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fault_data import toy_shards

from lightning_alchemist.paths import unique_dir

ROOT = Path(__file__).resolve().parents[2]
TOY = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
       "eval.num_prompts=4", "eval.fid_real=16", "eval.val_batches=1", "eval.grid_images=4", "selection=random"]


def test_unique_dir_claims_a_fresh_folder_and_keeps_it_for_the_process(tmp_path):
    base = str(tmp_path / "runs" / "2026-01-01_00-00-00")
    first = unique_dir(base)
    assert first == base and unique_dir(base) == first  # stable within one process
    os.makedirs(tmp_path / "runs" / "other")
    assert unique_dir(str(tmp_path / "runs" / "other")) == str(tmp_path / "runs" / "other_1")


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_write_to_their_own_folders(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    # the same second, for certain: both name the same base folder, as ${now:...} would within one second
    data, _, _ = toy_shards()
    same = "hydra.run.dir='${unique_dir:${out}/runs/2026-01-01_00-00-00}'"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "recipes" / "train.py"), f"keep={keep}", f"out={tmp_path}", same, *TOY, *data],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for keep in (0.5, 1.0)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_1"]
    keeps = set()
    for run in runs:
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        keep = re.search(r"- keep=([0-9.]+)", overrides).group(1)
        title = (run / "report" / "summary.md").read_text().splitlines()[0]
        assert title.endswith(f"keep={float(keep)}"), (overrides, title)  # each folder's report is its own run's
        keeps.add(float(keep))
    assert keeps == {0.5, 1.0}
