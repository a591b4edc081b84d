"""The ``encode`` stage: every sample's frozen-encoder outputs, written once per shard (resumable, DDP).

:func:`encode_features` runs ``Trainer.predict`` over the pool and the validation split with
:class:`FeatureEncoder` (the proxy's ``encode`` then ``to_features``) and :class:`FeatureWriter` (one
atomic folder per shard). Like scoring, shard ``i`` of a split goes to rank ``i % world`` and ranks never
communicate, so each key is written once; a rerun skips the shards finished under the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from lightning_alchemist.features.identity import encoder_digest
from lightning_alchemist.features.store import (KEYS_FILE, finished_feature_shards, remove_stale_temporaries, shard_bytes_per_sample,
                                                write_feature_shard)

__all__ = ["FEATURES_VERSION", "FeatureEncoder", "FeatureWriter", "data_fingerprint", "encode_features", "features_fingerprint"]

log = logging.getLogger(__name__)

FEATURES_VERSION = 1
SPLITS = ("pool", "val")


def features_fingerprint(encoders: str, data: Any, image_size: Optional[int] = None) -> str:
    """16 hex digits naming a feature cache: the frozen encoders' digest, the data's identity, the preprocessing."""
    payload = {"v": FEATURES_VERSION, "encoders": encoders, "data": data, "image_size": image_size}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(data_id: Any) -> str:
    """16 hex digits naming a data identity (recorded in ``features.json``, so a later stage can find the cache)."""
    return hashlib.sha256(json.dumps(data_id, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _shard_name(path: str) -> str:
    from lightning_alchemist.data.shards import shard_stem

    return shard_stem(path)


class FeatureEncoder(pl.LightningModule):
    """``predict_step``: a batch's :meth:`~lightning_alchemist.proxy.base.T2IProxy.to_features` rows (CPU), with key and shard."""

    def __init__(self, proxy: Any) -> None:
        super().__init__()
        self.proxy = proxy.requires_grad_(False).eval()
        # a rank whose shards of a split are all finished (or a split with fewer shards than ranks) has nothing to do
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def train(self, mode: bool = True) -> "FeatureEncoder":
        return super().train(False)  # the encoders never train (no dropout, frozen norms)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if not batch["key"]:
            return {"key": [], "shard": [], "features": {}}
        feats = self.proxy.to_features(self.proxy.encode(batch))
        return {"key": list(batch["key"]), "shard": list(batch["shard"]), "features": {n: t.detach().cpu() for n, t in feats.items()}}


class FeatureWriter(BasePredictionWriter):
    """Buffers each shard's rows and writes its folder once the shard is complete (as ratings are written).

    The loaders yield whole shards in order (:class:`~lightning_alchemist.data.predict_sampler.ShardPartitionSampler`),
    so a shard is complete when its expected count is reached, when a later shard's rows arrive, or at the end.

    Args:
        root: the cache folder; dataloader ``i`` writes under ``root/splits[i]``.
        fingerprint: stored in every shard folder.
        expected: ``{(split, shard name): samples}``.
        skip: ``(split, shard name)`` already finished.
    """

    def __init__(self, root: Path, fingerprint: str, splits: Sequence[str], expected: Optional[Mapping[tuple[str, str], int]] = None,
                 skip: Optional[set[tuple[str, str]]] = None) -> None:
        super().__init__(write_interval="batch")
        self.root, self.fingerprint, self.splits = Path(root), fingerprint, list(splits)
        self.expected = dict(expected or {})
        self.skip = set(skip or ())
        self._buffers: "OrderedDict[tuple[str, str], dict[str, Any]]" = OrderedDict()
        self.written: list[tuple[str, str]] = []
        self.rows_written = 0

    def _flush(self, shard: tuple[str, str]) -> None:
        buf = self._buffers.pop(shard, None)
        if not buf or not buf["key"]:
            return
        tensors = {n: torch.cat(parts) for n, parts in buf["features"].items()}
        write_feature_shard(self.root / shard[0] / shard[1], buf["key"], tensors, self.fingerprint)
        self.written.append(shard)
        self.skip.add(shard)
        self.rows_written += len(buf["key"])
        if shard in self.expected and len(buf["key"]) != self.expected[shard]:
            log.warning("features %s/%s: wrote %d samples, expected %d (undecodable samples are skipped)", *shard, len(buf["key"]),
                        self.expected[shard])

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.splits[dataloader_idx]
        shards = [(split, _shard_name(s)) for s in prediction["shard"]]
        start = 0
        # rows of one shard are contiguous: take each run of equal shards at once
        while start < len(shards):
            shard = shards[start]
            end = start
            while end < len(shards) and shards[end] == shard:
                end += 1
            if shard not in self.skip:
                if shard not in self._buffers:
                    for done in list(self._buffers):  # shards arrive in order: earlier open ones are complete
                        self._flush(done)
                    self._buffers[shard] = {"key": [], "features": {n: [] for n in prediction["features"]}}
                buf = self._buffers[shard]
                buf["key"].extend(prediction["key"][start:end])
                for n, t in prediction["features"].items():
                    buf["features"][n].append(t[start:end])
                if self.expected.get(shard) == len(buf["key"]):
                    self._flush(shard)
            start = end

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        limited = trainer is not None and getattr(trainer, "limit_predict_batches", 1.0) not in (1.0, None)
        for shard in list(self._buffers):
            if limited and self.expected.get(shard) != len(self._buffers[shard]["key"]):
                self._buffers.pop(shard)  # a shard cut short is not complete: it is encoded again next time
                continue
            self._flush(shard)
        super().on_predict_epoch_end(trainer, pl_module)


class _EncodeData(pl.LightningDataModule):
    """One predict loader per split: whole shards per rank in shard order, finished shards left out."""

    def __init__(self, datamodule: Any, splits: Sequence[str], skip: set[tuple[str, str]], batch_size: int) -> None:
        super().__init__()
        self.data, self.splits, self.skip, self.batch_size = datamodule, list(splits), skip, batch_size

    def predict_dataloader(self) -> list[DataLoader]:
        from lightning_alchemist.data.predict_sampler import ShardPartitionSampler
        from lightning_alchemist.data.sample import collate_samples

        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        cfg = self.data.cfg
        loaders = []
        for split in self.splits:
            dataset = getattr(self.data, split)
            skip = sorted(name for s, name in self.skip if s == split)
            sampler = ShardPartitionSampler(dataset, skip_stems=skip, num_replicas=world, rank=rank)
            loaders.append(DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                                      collate_fn=collate_samples, persistent_workers=False))
        return loaders


def encode_features(proxy: Any, datamodule: Any, root: str | Path, data_id: Any = None, batch_size: Optional[int] = None,
                    trainer_kwargs: Optional[Mapping[str, Any]] = None, splits: Sequence[str] = SPLITS,
                    callbacks: Optional[list[pl.Callback]] = None) -> dict[str, Any]:
    """Encode every sample of ``datamodule``'s splits with ``proxy``'s frozen encoders into ``root`` (resumable).

    Args:
        proxy: a :class:`~lightning_alchemist.proxy.base.T2IProxy` (its ``encode`` and ``to_features``).
        datamodule: a ``T2IDataModule`` (map style: ``pool``/``val`` splits with shards).
        root: the cache folder (``root/<split>/<shard>/``, plus ``root/features.json``).
        data_id: the data's identity (part of the fingerprint); default: :func:`~lightning_alchemist.data.sources.data_identity`
            of the datamodule's config and seed.
        batch_size: samples per encoder forward (default ``data.batch_size``).
        trainer_kwargs: Lightning device arguments (``devices``, ``strategy``, ``accelerator``, ``enable_progress_bar``).

    Returns:
        ``{"root", "fingerprint", "encoders", "written", "skipped", "rows", "bytes_per_sample", "seconds"}`` (``written``/``rows``:
        this rank's); read the cache with ``FeatureStore(root, fingerprint)``.
    """
    import time

    from lightning_alchemist.callbacks.progress import progress_settings
    from lightning_alchemist.rater.progress import ScoringProgressBar

    root = Path(root)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if data_id is None:  # the data's identity (as the pipeline takes it), whichever splits are encoded
        from lightning_alchemist.data.sources import data_identity

        data_id = data_identity(datamodule.cfg, seed=int(getattr(datamodule, "seed", 0)))
    for s in splits:  # shard folders are named by shard stem: two shards of one name would overwrite each other
        seen: dict[str, str] = {}
        for info in getattr(datamodule, s).shards:
            if info.stem in seen and seen[info.stem] != info.path:
                from lightning_alchemist.errors import DataError

                raise DataError(f"data: shards {seen[info.stem]} and {info.path} share the name '{info.stem}'; the feature cache "
                                "(like ratings) is kept per shard name: rename one, or pass features.use=off")
            seen[info.stem] = info.path
    encoders = encoder_digest(proxy)
    fp = features_fingerprint(encoders, data_id, getattr(datamodule.cfg, "image_size", None))
    for s in splits:
        remove_stale_temporaries(root / s)  # a killed encode's half-written shard folders
    skip = {(s, name) for s in splits for name in finished_feature_shards(root / s, fp)}
    expected = {(s, info.stem): info.num_samples for s in splits for info in getattr(datamodule, s).shards if info.num_samples}
    todo = [k for k in expected if k not in skip]
    writer = FeatureWriter(root, fp, splits, expected=expected, skip=skip)
    kwargs: dict[str, Any] = {"accelerator": "auto", "devices": 1, "logger": False, "enable_model_summary": False}
    kwargs.update(trainer_kwargs or {})
    t0 = time.perf_counter()
    if todo:
        show_bar, lines = progress_settings(kwargs.get("enable_progress_bar", True), name="encode")
        kwargs["enable_progress_bar"] = show_bar
        bar = [ScoringProgressBar()] if show_bar else lines
        trainer = pl.Trainer(callbacks=[writer, *bar, *(callbacks or [])], **kwargs)
        data = _EncodeData(datamodule, splits, skip, int(batch_size or datamodule.cfg.batch_size))
        trainer.predict(FeatureEncoder(proxy), datamodule=data, return_predictions=False)
        trainer.strategy.barrier()  # every rank's shards are on disk before any rank reads the store
        is_zero = trainer.is_global_zero
    else:
        is_zero = all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))
    seconds = time.perf_counter() - t0
    info = {"fingerprint": fp, "encoders": encoders, "version": FEATURES_VERSION,
            "data": data_fingerprint(data_id)}
    if is_zero:
        tmp = root / "features.json.tmp"
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, root / "features.json")
    finished = sorted(p for s in splits for p in (root / s).glob("*/" + KEYS_FILE))
    per = shard_bytes_per_sample(finished[0].parent) if finished else 0
    rows = writer.rows_written
    if is_zero:
        print(f"encoded {rows} samples into {len(writer.written)} shard folders (skipped {len(skip)} finished) in {seconds:.1f} s"
              f" ({rows / max(seconds, 1e-9):.0f} samples/s); {per} bytes a sample -> {root} [fingerprint {fp}]", flush=True)
    return {"root": str(root), "fingerprint": fp, "encoders": encoders, "written": ["/".join(k) for k in writer.written],
            "skipped": ["/".join(k) for k in sorted(skip)], "rows": rows, "bytes_per_sample": per, "seconds": round(seconds, 3)}
