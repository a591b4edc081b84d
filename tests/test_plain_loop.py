"""examples/plain_loop.py under `torchrun --nproc-per-node 2` (gloo, CPU): the ranks see exactly the selected keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import layout_fixtures as F
from lightning_alchemist.selection.manifest import Selection

ROOT = Path(__file__).resolve().parents[1]


def _pool_keys(name: str, root: Path) -> list[str]:
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule({"name": name, "root": str(root), "num_workers": 0, "val_fraction": 0.1})
    dm.setup("fit")
    return sorted(dm.pool.keys)


@pytest.mark.parametrize("name,style", [("hpdv3", "map"), ("laion", "stream")])
def test_plain_loop_under_torchrun_sees_exactly_the_selected_keys(name, style, tmp_path, cache_dir):
    make = {"hpdv3": F.make_hpdv3, "laion": lambda r: F.make_laion(r, shards=3)}[name]
    make(tmp_path / "data")
    keys = _pool_keys(name, tmp_path / "data")
    chosen = keys[::2][: len(keys[::2]) // 2 * 2]  # an even count: the map sampler's equal shares need no padding
    Selection.from_keys(chosen).write(tmp_path / "selection.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "examples" / "plain_loop.py"), "--data", name, "--root", str(tmp_path / "data"), "--style", style,
           "--selection", str(tmp_path / "selection.parquet"), "--val-fraction", "0.1", "--keys-out", str(tmp_path / "keys")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    ranks = [(tmp_path / "keys" / f"rank{r}.txt").read_text().split() for r in range(2)]
    assert all(ranks), "both ranks trained"
    assert not set(ranks[0]) & set(ranks[1])  # disjoint
    assert sorted(ranks[0] + ranks[1]) == sorted(chosen)  # exactly the selected keys, each once
