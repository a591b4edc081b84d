"""Issue 16, the fault suite: kill -9 at a random point of each stage, rerun, and end with the artifacts of an
uninterrupted run (ratings without a duplicate or missing key, the same selection, the same target weights, the
same written-back shards).

The points are drawn from ``FAULT_SEED`` (default: a fresh seed, printed on failure; rerun with it to repeat).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lightning_alchemist.selection import Ratings, Selection

DRIVER = Path(__file__).with_name("kill_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def drive(out: Path, kill: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(DRIVER), str(out), kill], capture_output=True, text=True, env=env, timeout=300)


def stage(out: Path, name: str) -> Path:
    [folder] = [p for p in (out / "cache" / name).iterdir() if p.is_dir()]
    assert (folder / "stage.json").is_file()
    return folder


def artifacts(out: Path) -> dict:
    ratings = Ratings.read(stage(out, "ratings") / "ratings")
    selection = Selection.read(stage(out, "selection") / "selection.parquet")
    target = torch.load(stage(out, "train") / "train" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    shards = {}
    for tar in sorted((out / "pruned").glob("*.tar")):
        with tarfile.open(tar) as t:
            shards[tar.name] = sorted(m.name for m in t.getmembers())
    return {"keys": ratings.keys.to_pylist(), "ratings": np.asarray(ratings.ratings), "selection": selection.keys.to_pylist(),
            "target": target["state_dict"], "step": target["global_step"], "shards": shards,
            "pruned_ratings": pq.read_table(out / "pruned" / "ratings.parquet").to_pydict()}


@pytest.mark.slow
def test_kill_9_in_every_stage_then_rerun_ends_with_the_uninterrupted_artifacts(tmp_path):
    seed = int(os.environ.get("FAULT_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    kills = [
        f"warmup:{rng.randint(2, 12)}",                                    # rater (the proxy warm-up: the default rater)
        f"replace:ratings:{rng.randint(1, 2)}",                            # scoring (2 pool shards)
        rng.choice(["replace:selection:1", "replace:marker:1"]),           # selection write (the file, or its stage marker)
        f"target:{rng.randint(3, 5)}",                                     # target training (checkpoints every 2 of 6 steps)
        f"replace:pruned:{rng.randint(1, 5)}",                             # write-back (5 shards)
    ]
    why = f"FAULT_SEED={seed} kills={kills}"
    clean = drive(tmp_path / "clean", "none")
    assert clean.returncode == 0 and "DRIVER DONE" in clean.stdout, f"{why}\n{clean.stdout[-3000:]}{clean.stderr[-3000:]}"
    out = tmp_path / "killed"
    for kill in kills:
        proc = drive(out, kill)
        assert proc.returncode == -9, f"{why}: {kill} did not die where planned\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    last = drive(out, "none")
    assert last.returncode == 0 and "DRIVER DONE" in last.stdout, f"{why}\n{last.stdout[-3000:]}{last.stderr[-3000:]}"
    assert "reused cached train" in last.stdout, why  # a finished training is not redone (its checkpoint is loaded)

    a, b = artifacts(tmp_path / "clean"), artifacts(out)
    assert len(b["keys"]) == len(set(b["keys"])) == 200, why  # every pool key rated once
    assert b["keys"] == a["keys"] and np.array_equal(a["ratings"], b["ratings"]), why
    assert b["selection"] == a["selection"], why
    assert b["step"] == a["step"] == 6 and all(torch.equal(a["target"][k], b["target"][k]) for k in a["target"]), why
    assert b["shards"] == a["shards"] and b["pruned_ratings"] == a["pruned_ratings"], why
    written = [m for names in b["shards"].values() for m in names if m.endswith(".json")]
    assert len(written) == len(set(written)) == len(b["selection"]), why  # no sample written twice or left out
    assert not list(out.rglob("*.tmp")), why  # nothing half-written left behind
