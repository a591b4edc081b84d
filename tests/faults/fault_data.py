"""Tiny webdataset shards and a key-recording module for the fault suite (written into tmp_path)."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import Iterable

import lightning.pytorch as pl
import numpy as np
import torch
import webdataset as wds
from PIL import Image


def png(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_shard(path: Path, keys: Iterable[str]) -> str:
    """One shard with a PNG and a caption per key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as sink:
        for i, key in enumerate(keys):
            sink.write({"__key__": key, "png": png(zlib.crc32(key.encode()) % 100_000), "txt": f"caption of {key}"})
    return str(path)


def write_pool(folder: Path, num_shards: int, per_shard: int, prefix: str = "shard", key_prefix: str = "k") -> list[str]:
    """``num_shards`` shards ``<prefix>-00000s.tar`` of ``per_shard`` distinct keys each."""
    return [
        write_shard(folder / f"{prefix}-{s:06d}.tar", [f"{key_prefix}{s * per_shard + i:05d}" for i in range(per_shard)])
        for s in range(num_shards)
    ]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (to prove nothing was written there)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


class KeyRecorder(pl.LightningModule):
    """Records the keys of every training batch per epoch; trains one weight on the image mean."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[str]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["key"])
        x = batch["image"].mean() if "image" in batch else batch["x"].mean()
        return (self.w * x - 1).pow(2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def quiet_trainer(callbacks, max_epochs: int = 1, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )


class KeyedItems:
    """A map-style dataset of ``{"key", "x"}`` items over ``self.keys`` (set by subclasses), for callback tests."""

    keys: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        return {"key": self.keys[i], "x": torch.ones(2)}


def collate(batch):
    return {"key": [b["key"] for b in batch], "x": torch.stack([b["x"] for b in batch])}


def toy_shards() -> tuple[list[str], list[str], list[str]]:
    """Tiny shapes data (200 + 100 samples, 2 pool shards) as plain shards (generated once per cache), for subprocess runs that
    must not train a tokenizer or a judge on first use: data=wds (the judge reads only data=shapes), random tokenizers.
    Returns ``(overrides, pool shards, validation shards)``."""
    from lightning_alchemist.data.datamodule import T2IDataModule

    source = T2IDataModule({"name": "shapes", "image_size": 32, "batch_size": 8,
                            "shapes": {"num_pool": 200, "num_val": 100, "shard_size": 100}}).source
    overrides = ["data=wds", f"data.urls=[{','.join(source.pool_urls)}]", f"data.val_urls=[{','.join(source.val_urls)}]",
                 "data.batch_size=8", "data.image_size=32", "model.tokenizer.auto_train=false", "rater.proxy.tokenizer.auto_train=false"]
    return overrides, list(source.pool_urls), list(source.val_urls)
