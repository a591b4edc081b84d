"""DataSelectionCallback under Lightning DDP: 2 CPU processes (gloo), map-style and webdataset.

The test runs this file as a script (Lightning's DDP launcher re-runs the script for rank 1);
each rank writes the keys it trained on, per epoch, and the test checks them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.ddp
def test_ddp_ranks_are_disjoint_and_complete_for_both_dataset_styles(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads((tmp_path / "expected.json").read_text())
    for style in ("map", "stream"):
        ranks = [json.loads((tmp_path / f"{style}-rank{r}.json").read_text()) for r in range(2)]
        for epoch in ("0", "1"):
            a, b = ranks[0][epoch], ranks[1][epoch]
            assert len(a) == len(b)  # equal shares: both ranks step equally
            assert set(a).isdisjoint(b)
            assert sorted(a + b) == sorted(expected[style])
        if style == "map":
            assert ranks[0]["0"] != ranks[0]["1"]  # a new (shared) order each epoch
    # batching="mixed": the same selection, disjoint and complete per epoch, and each rank trains on exactly its
    # contiguous piece of the one mixed order (clusters: key index % 4), not on every second sample of it
    import numpy as np

    from lightning_alchemist.sampling.mixed import ClusterMixedSampler
    from lightning_alchemist.sampling.samplers import WeightedSubsetSampler
    from test_callback import N

    ranks = [json.loads((tmp_path / f"mixed-rank{r}.json").read_text()) for r in range(2)]
    positions = np.array(sorted(int(k[3:]) for k in expected["map"]))
    for epoch in ("0", "1"):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) and set(a).isdisjoint(b) and sorted(a + b) == sorted(expected["map"])
        for r, keys in enumerate((a, b)):
            sampler = ClusterMixedSampler(WeightedSubsetSampler(positions, seed=5), np.arange(N) % 4, 2, r)
            sampler.set_epoch(int(epoch))
            assert keys == [f"img{i:04d}" for i in sampler], (r, epoch)


def main(out: Path) -> None:
    import lightning.pytorch as pl

    from test_callback import KeyedDataset, Recorder, StreamRecorder, ratings, write_shards

    from lightning_alchemist.callbacks import DataSelectionCallback
    from lightning_alchemist.selection import Selection, ShiftGaussian

    class Dump(pl.Callback):
        def __init__(self, style: str) -> None:
            self.style = style

        def on_train_end(self, trainer, pl_module):
            path = out / f"{self.style}-rank{trainer.global_rank}.json"
            path.write_text(json.dumps(pl_module.seen))

    pl.seed_everything(0)
    map_sel = ShiftGaussian().select(ratings(), 0.25, seed=1)
    stream_sel = Selection.from_keys([f"img{i:04d}" for i in range(0, 48, 3)])
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    urls = write_shards(shard_dir)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        (out / "expected.json").write_text(
            json.dumps({"map": map_sel.keys.to_pylist(), "stream": stream_sel.keys.to_pylist()})
        )
    import numpy as np

    for style, model, sel in (
        ("map", Recorder(KeyedDataset(), batch_size=4), map_sel),
        ("stream", StreamRecorder(urls, batch_size=4), stream_sel),
        ("mixed", Recorder(KeyedDataset(), batch_size=4), map_sel),
    ):
        mixed = {"batching": "mixed", "clusters": np.arange(len(model.dataset)) % 4} if style == "mixed" else {}
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
            callbacks=[DataSelectionCallback(sel, seed=5, **mixed), Dump(style)],
        )
        trainer.fit(model)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
