"""DataSelectionCallback on a plain Trainer with a module and datasets written here (single process)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_alchemist.callbacks import DataSelectionCallback
from lightning_alchemist.errors import DataError
from lightning_alchemist.selection import Curriculum, Ratings, Selection, ShiftGaussian

N = 120


class KeyedDataset(Dataset):
    """A user's map-style dataset: ``keys`` plus dict samples."""

    def __init__(self, n: int = N, prefix: str = "img") -> None:
        self.keys = [f"{prefix}{i:04d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        return {"key": self.keys[i], "x": torch.full((3,), float(i))}


class RecordsDataset(Dataset):
    """A dataset without ``keys``: the key lives in its records (needs ``key_fn``)."""

    def __init__(self, n: int = N) -> None:
        self.records = [{"id": f"img{i:04d}", "v": i} for i in range(n)]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple:
        return self.records[i]["id"], torch.full((3,), float(i))


def collate(batch: list) -> dict:
    if isinstance(batch[0], tuple):
        return {"key": [b[0] for b in batch], "x": torch.stack([b[1] for b in batch])}
    return {"key": [b["key"] for b in batch], "x": torch.stack([b["x"] for b in batch])}


class Recorder(pl.LightningModule):
    """Records the keys of every training batch, per epoch."""

    def __init__(self, dataset: Dataset, batch_size: int = 8) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.dataset = dataset
        self.batch_size = batch_size
        self.seen: dict[int, list[str]] = {}
        self.batch_sizes: set[int] = set()

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["key"])
        self.batch_sizes.add(len(batch["key"]))
        return self.layer(batch["x"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, collate_fn=collate, drop_last=False)


def trainer(callbacks, max_epochs=2, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks, logger=False,
        enable_checkpointing=kw.pop("enable_checkpointing", False), enable_progress_bar=False,
        enable_model_summary=False, **kw,
    )


def ratings(n: int = N, prefix: str = "img") -> Ratings:
    return Ratings.from_arrays([f"{prefix}{i:04d}" for i in range(n)], np.random.default_rng(0).standard_normal(n))


def test_map_style_sees_only_selected_keys_each_epoch():
    sel = ShiftGaussian().select(ratings(), 0.25, seed=1)
    selected = set(sel.keys.to_pylist())
    model = Recorder(KeyedDataset(), batch_size=8)
    cb = DataSelectionCallback(sel)
    t = trainer(cb, max_epochs=3)
    t.fit(model)
    assert float(t.callback_metrics["selection/keep_ratio"]) == pytest.approx(0.25)  # logged each epoch
    assert float(t.callback_metrics["selection/found_ratio"]) == 1.0
    for epoch in range(3):
        assert sorted(model.seen[epoch]) == sorted(selected)  # exactly the selection, once each
    assert model.seen[0] != model.seen[1]  # reshuffled per epoch
    assert max(model.batch_sizes) == 8  # the user's batch size and collate survive
    assert cb.stats["found"] == 30 and cb.stats["keep_ratio"] == pytest.approx(0.25)


def test_key_fn_path_and_ratings_inputs(tmp_path):
    r = ratings()
    sel = ShiftGaussian().select(r, 0.5, seed=2)
    path = sel.write(tmp_path / "selection.parquet")
    key_fn = lambda ds, i: ds.records[i]["id"]  # noqa: E731
    for source in (str(path), path):
        model = Recorder(RecordsDataset())
        trainer(DataSelectionCallback(source, key_fn=key_fn), max_epochs=1).fit(model)
        assert sorted(model.seen[0]) == sorted(sel.keys.to_pylist())
    model = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(r, strategy=ShiftGaussian(), keep=0.5, seed=2), max_epochs=1).fit(model)
    assert sorted(model.seen[0]) == sorted(sel.keys.to_pylist())


def test_weighted_mode_and_curriculum():
    sel = Selection.from_keys([f"img{i:04d}" for i in range(N)], weights=[5.0 if i < 10 else 0.0 for i in range(N)])
    model = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(sel, mode="weighted", num_samples=40, replacement=True), max_epochs=1).fit(model)
    assert len(model.seen[0]) == 40 and set(model.seen[0]) <= {f"img{i:04d}" for i in range(10)}
    from lightning_alchemist.errors import ConfigError

    with pytest.raises(ConfigError, match="num_samples=40 exceeds the 10 samples with positive weight"):
        trainer(DataSelectionCallback(sel, mode="weighted", num_samples=40, replacement=False), max_epochs=1).fit(
            Recorder(KeyedDataset()))
    model = Recorder(KeyedDataset())  # left unset, more draws than positive weights are made with replacement
    trainer(DataSelectionCallback(sel, mode="weighted", num_samples=40), max_epochs=1).fit(model)
    assert len(model.seen[0]) == 40 and set(model.seen[0]) <= {f"img{i:04d}" for i in range(10)}
    r = Ratings.from_arrays([f"img{i:04d}" for i in range(N)], -np.arange(N, dtype=float))  # rank = index
    cur = Curriculum().select(r, 0.25)  # epochs left open: the trainer's max_epochs
    model = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(cur), max_epochs=4).fit(model)  # switches to weighted by itself
    means = [np.mean([int(k[3:]) for k in model.seen[e]]) for e in range(4)]
    assert all(len(model.seen[e]) == 30 for e in range(4)) and means == sorted(means)


def test_mismatched_keys_warn_or_fail_with_counts():
    half_foreign = Selection.from_keys([f"img{i:04d}" for i in range(50)] + [f"zzz{i}" for i in range(10)])
    model = Recorder(KeyedDataset())
    with pytest.warns(UserWarning, match=r"50 of 60 selected keys \(83\.3%\) were found in the map-style dataset of 120"):
        trainer(DataSelectionCallback(half_foreign), max_epochs=1).fit(model)
    assert sorted(model.seen[0]) == [f"img{i:04d}" for i in range(50)]
    foreign = Selection.from_keys([f"other{i}" for i in range(500)] + ["img0001"])
    with pytest.raises(DataError, match=r"1 of 501 selected keys \(0\.2%\) were found in the map-style dataset of 120 samples"):
        trainer(DataSelectionCallback(foreign), max_epochs=1).fit(Recorder(KeyedDataset()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a full match does not warn about matching
        try:
            trainer(DataSelectionCallback(Selection.from_keys(["img0001", "img0002"])), max_epochs=1).fit(Recorder(KeyedDataset()))
        except UserWarning as w:
            assert "selected keys" not in str(w)
    with pytest.raises(Exception, match="has no 'keys' attribute"):
        trainer(DataSelectionCallback(half_foreign), max_epochs=1).fit(Recorder(RecordsDataset()))


def test_resume_continues_the_same_epoch_orders(tmp_path):
    sel = ShiftGaussian().select(ratings(), 0.5, seed=3)
    full = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(sel, seed=11), max_epochs=3).fit(full)

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = Recorder(KeyedDataset())
    cb = DataSelectionCallback(sel, seed=11)
    trainer([cb, ckpt], max_epochs=2, enable_checkpointing=True).fit(first)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    saved = next(v for k, v in state.items() if "DataSelectionCallback" in k)
    assert saved["selection_fingerprint"] == sel.fingerprint and saved["epoch"] == 1

    resumed = Recorder(KeyedDataset())
    cb2 = DataSelectionCallback(sel, seed=11)
    trainer(cb2, max_epochs=3).fit(resumed, ckpt_path=tmp_path / "last.ckpt")
    assert list(resumed.seen) == [2] and resumed.seen[2] == full.seen[2]
    assert first.seen[1] == full.seen[1]

    other = ShiftGaussian().select(ratings(), 0.5, seed=4)
    with pytest.raises(DataError, match="the checkpoint was trained on selection"):
        trainer(DataSelectionCallback(other, seed=11), max_epochs=3).fit(Recorder(KeyedDataset()), ckpt_path=tmp_path / "last.ckpt")


# -- webdataset streams ------------------------------------------------------------------------------------------------
def write_shards(folder, num_shards: int = 4, per_shard: int = 12) -> list[str]:
    import webdataset as wds

    urls = []
    for s in range(num_shards):
        path = folder / f"shard-{s:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                idx = s * per_shard + i
                sink.write({"__key__": f"img{idx:04d}", "cls": str(idx).encode(), "txt": b"a caption"})
        urls.append(str(path))
    return urls


def to_sample(raw: dict) -> dict:
    return {"key": raw["__key__"], "x": torch.full((3,), float(int(raw["cls"])))}


def make_stream(urls: list[str]):
    import webdataset as wds

    return wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False).decode().map(to_sample)


class StreamRecorder(Recorder):
    def __init__(self, urls: list[str], batch_size: int = 4) -> None:
        super().__init__(None, batch_size)
        self.urls = urls

    def train_dataloader(self):
        return DataLoader(make_stream(self.urls), batch_size=self.batch_size, collate_fn=collate)


def test_webdataset_stream_sees_only_selected_keys(tmp_path):
    from lightning_alchemist.sampling import KeyFilter

    urls = write_shards(tmp_path)
    every_third = Selection.from_keys([f"img{i:04d}" for i in range(0, 48, 3)])
    model = StreamRecorder(urls)
    cb = DataSelectionCallback(every_third)
    trainer(cb, max_epochs=2).fit(model)
    for epoch in range(2):
        assert sorted(model.seen[epoch]) == sorted(every_third.keys.to_pylist())
    assert cb.stats["found"] == 16 and cb.stats["dataset_size"] == 48
    # the filter sits right after samples are grouped from tar members, before decoding
    t = trainer(DataSelectionCallback(every_third), max_epochs=1)
    t.fit(StreamRecorder(urls))
    stages = t.train_dataloader.dataset.pipeline
    at = next(i for i, s in enumerate(stages) if isinstance(s, KeyFilter))
    assert getattr(stages[at - 1], "f", None).__name__ == "group_by_keys" and at < len(stages) - 2

    # weighted: keep-probability ∝ weight, seeded per (seed, epoch, key)
    weights = [1.0 if i < 24 else 0.0 for i in range(48)]
    sel = Selection.from_keys([f"img{i:04d}" for i in range(48)], weights)
    model = StreamRecorder(urls)
    trainer(DataSelectionCallback(sel, mode="weighted", num_samples=12, epoch_length=12), max_epochs=1).fit(model)
    assert len(model.seen[0]) == 12 and all(int(k[3:]) < 24 for k in model.seen[0])
    f = KeyFilter(["a", "b"], np.array([0.5, 1.0]), seed=1)
    kept = [f.keeps("a") for f.epoch in range(400)]
    assert 150 < sum(kept) < 250 and f.keeps("b") and not f.keeps("c")

    foreign = Selection.from_keys([f"other{i}" for i in range(300)])
    with pytest.raises(DataError, match=r"0 of 300 selected keys \(0\.0%\) were found in the webdataset shards of 48"):
        trainer(DataSelectionCallback(foreign), max_epochs=1).fit(StreamRecorder(urls))


def test_resume_mid_epoch_continues_where_it_stopped(tmp_path):
    sel = ShiftGaussian().select(ratings(), 0.5, seed=3)  # 60 samples: 8 batches of 8 per epoch
    full = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(sel, seed=5), max_epochs=2).fit(full)

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=5)
    first = Recorder(KeyedDataset())
    trainer([DataSelectionCallback(sel, seed=5), ckpt], max_epochs=2, max_steps=5, enable_checkpointing=True).fit(first)
    assert first.seen[0] == full.seen[0][:40]

    resumed = Recorder(KeyedDataset())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's "dataloader is not resumable" notice: we resume it ourselves
        trainer(DataSelectionCallback(sel, seed=5), max_epochs=2).fit(resumed, ckpt_path=tmp_path / "last.ckpt")
    assert first.seen[0] + resumed.seen[0] == full.seen[0]  # no sample replayed, none skipped
    assert resumed.seen[1] == full.seen[1]


def test_soft_shift_gaussian_redraws_each_epoch():
    r = Ratings.from_arrays([f"img{i:04d}" for i in range(N)], -np.arange(N, dtype=float))  # rank = index
    soft = ShiftGaussian().soft(r, 0.25)
    assert (soft.weights[:24] == 0).all() and soft.weights[24:].min() > 0 and soft.samples_per_epoch() == 30
    model = Recorder(KeyedDataset())
    trainer(DataSelectionCallback(soft, mode="weighted"), max_epochs=2).fit(model)
    for epoch in range(2):
        keys = model.seen[epoch]
        assert len(keys) == len(set(keys)) == 30 and min(int(k[3:]) for k in keys) >= 24
    assert set(model.seen[0]) != set(model.seen[1])  # a fresh Shift-Gaussian draw per epoch


class KeyedDataModule(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(KeyedDataset(), batch_size=5, shuffle=False, collate_fn=collate)


class NoLoaderRecorder(Recorder):
    train_dataloader = None  # the data comes from a datamodule or fit(train_dataloaders=...)


def test_datamodule_and_direct_dataloader_sources():
    sel = ShiftGaussian().select(ratings(), 0.25, seed=1)
    model = NoLoaderRecorder(None)
    trainer(DataSelectionCallback(sel), max_epochs=1).fit(model, datamodule=KeyedDataModule())
    assert sorted(model.seen[0]) == sorted(sel.keys.to_pylist()) and max(model.batch_sizes) == 5
    model = NoLoaderRecorder(None)
    loader = DataLoader(KeyedDataset(), batch_size=6, collate_fn=collate)
    trainer(DataSelectionCallback(sel), max_epochs=1).fit(model, train_dataloaders=loader)
    assert sorted(model.seen[0]) == sorted(sel.keys.to_pylist()) and max(model.batch_sizes) == 6


def test_subset_mode_skips_zero_weight_rows():
    sel = Selection.from_keys([f"img{i:04d}" for i in range(20)], weights=[1.0] * 10 + [0.0] * 10)
    model = Recorder(KeyedDataset())
    cb = DataSelectionCallback(sel)
    trainer(cb, max_epochs=1).fit(model)
    assert sorted(model.seen[0]) == [f"img{i:04d}" for i in range(10)] and cb.stats["found"] == 20
