"""Issue 16 #6: ``mode="weighted"`` draws ∝ weight for any manifest, the same on every rank for (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from fault_data import KeyedItems, KeyRecorder, collate, quiet_trainer
from torch.utils.data import DataLoader, Dataset

from lightning_alchemist.callbacks import DataSelectionCallback
from lightning_alchemist.sampling import DistributedWeightedSubsetSampler

GROUPS, PER = 4, 10  # weights 1, 2, 3, 4 on 10 keys each, interleaved (key i has weight 1 + i % 4)
CHI2_3DOF_P001 = 16.27


class Keys(KeyedItems, Dataset):
    def __init__(self, n: int = GROUPS * PER) -> None:
        self.keys = [f"img{i:04d}" for i in range(n)]


def hand_written_manifest(path) -> str:
    """What a user writes: keys and weights, no lightning_alchemist metadata (no samples-per-epoch)."""
    keys = [f"img{i:04d}" for i in range(GROUPS * PER)]
    weights = [float(1 + i % GROUPS) for i in range(GROUPS * PER)]
    pq.write_table(pa.table({"key": keys, "weight": weights}), path)
    return str(path)


def chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def test_weighted_mode_draws_in_proportion_to_the_weights_of_a_hand_written_manifest(tmp_path):
    manifest = hand_written_manifest(tmp_path / "mine.parquet")
    model = KeyRecorder()
    model.train_dataloader = lambda: DataLoader(Keys(), batch_size=40, collate_fn=collate)
    epochs = 30
    quiet_trainer(DataSelectionCallback(manifest, mode="weighted", seed=3), max_epochs=epochs).fit(model)
    drawn = [int(k[3:]) % GROUPS for e in range(epochs) for k in model.seen[e]]
    assert len(drawn) == epochs * GROUPS * PER  # the epoch length is the positive-weight keys (40 draws)
    counts = np.bincount(drawn, minlength=GROUPS).astype(float)
    expected = len(drawn) * np.arange(1, GROUPS + 1) / 10.0
    # before the fix every key was drawn once per epoch: 300/300/300/300 against 120/240/360/480, chi2 = 362
    assert chi2(counts, expected) < CHI2_3DOF_P001, (counts, expected)
    assert counts[3] > 3 * counts[0]
    # the same (seed, epoch) gives the same draws: a second run, as every DDP rank computes it
    again = KeyRecorder()
    again.train_dataloader = model.train_dataloader
    quiet_trainer(DataSelectionCallback(manifest, mode="weighted", seed=3), max_epochs=2).fit(again)
    assert again.seen[0] == model.seen[0] and again.seen[1] == model.seen[1]


def test_every_rank_takes_its_share_of_one_global_weighted_order(tmp_path):
    manifest = hand_written_manifest(tmp_path / "mine.parquet")
    cb = DataSelectionCallback(manifest, mode="weighted", seed=7)
    model = KeyRecorder()
    model.train_dataloader = lambda: DataLoader(Keys(), batch_size=40, collate_fn=collate)
    quiet_trainer(cb, max_epochs=1).fit(model)
    sampler = cb._samplers[0]
    assert sampler.replacement  # the documented rule for a manifest without a draw count
    shares = [list(DistributedWeightedSubsetSampler(sampler, 2, r)) for r in range(2)]
    order = sampler.order(0).tolist()
    assert shares[0] == order[0::2] and shares[1] == order[1::2]


def stream_loader(urls: list[str]) -> DataLoader:
    import webdataset as wds

    def to_sample(raw: dict) -> dict:
        return {"key": raw["__key__"], "x": torch.ones(2)}

    stream = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False).map(to_sample)
    return DataLoader(stream, batch_size=5, collate_fn=collate)


def test_a_stream_keeps_keys_in_proportion_to_the_weights(tmp_path):
    import webdataset as wds

    urls = []
    for s in range(2):
        urls.append(str(tmp_path / f"s-{s:06d}.tar"))
        with wds.TarWriter(urls[-1]) as sink:
            for i in range(s * 20, s * 20 + 20):
                sink.write({"__key__": f"img{i:04d}", "txt": b"a caption"})
    manifest = hand_written_manifest(tmp_path / "mine.parquet")
    cb = DataSelectionCallback(manifest, mode="weighted", seed=1)
    model = KeyRecorder()
    model.train_dataloader = lambda: stream_loader(urls)
    epochs = 40
    quiet_trainer(cb, max_epochs=epochs).fit(model)
    # each pass keeps a key with probability weight / max weight: 2.5 of every 4 weighted keys. (The epoch
    # is cut at that expected length, so a pass that keeps more loses its tail: weights are interleaved
    # along the stream here, so that cut does not favour one weight.)
    assert cb.stats["samples_per_epoch"] == 25
    counts = np.bincount([int(k[3:]) % GROUPS for e in range(epochs) for k in model.seen.get(e, [])], minlength=GROUPS)
    expected = counts.sum() * np.arange(1, GROUPS + 1) / 10.0
    assert counts.sum() > 0.8 * epochs * 25 and chi2(counts.astype(float), expected) < CHI2_3DOF_P001, (counts, expected)
