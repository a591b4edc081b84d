"""Frozen encodes of a whole split, computed once and cached (a small store for the rater's study).

A proxy's :meth:`~lightning_alchemist.proxy.base.T2IProxy.encode` runs only frozen modules (image
tokenizer/VAE, text encoder), so a split's encodes depend on those weights and the data alone.
:func:`cached_encodes` encodes every sample once and keeps the batch-first tensors in one file
``<cache root>/encodes/<fingerprint>.pt``; warm-up, signals and direct scoring then run on slices
of it with no image decoding and no encoder forward. Undecodable samples are skipped and counted.
When the run has a feature cache of the same encoders (:mod:`lightning_alchemist.features`, the pipeline's
encode stage), :func:`cached_encodes` reads the split from it instead and writes nothing here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor

from lightning_alchemist.paths import cache_root, file_lock
from lightning_alchemist.proxy.base import Encoded, T2IProxy
from lightning_alchemist.features.identity import encoder_digest  # re-exported: the one digest of frozen encoders

__all__ = ["EncodedLoader", "EncodedSet", "cached_encodes", "dataset_identity", "encode_dataset", "encoder_digest", "encodes_from_features"]

log = logging.getLogger(__name__)

ENCODES_VERSION = 1


@dataclass
class EncodedSet:
    """The encodes of N samples: ``keys`` and batch-first tensors (CPU), row-aligned.

    Attributes:
        keys: sample keys, in dataset order.
        tensors: name -> ``[N, ...]`` tensor (the proxy's ``Encoded`` entries).
        shards: the shard of each sample (for writing ratings per shard); may be empty.
        skipped: samples that could not be decoded.
    """

    keys: list[str]
    tensors: dict[str, Tensor]
    shards: list[str] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index: Sequence[int] | Tensor, device: Any = None) -> Encoded:
        """The rows ``index`` as one ``Encoded`` batch (``key``, ``shard``, tensors on ``device``), marked
        ``encoded`` so the rater's steps and scoring skip the encoders."""
        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        out: Encoded = {"key": [self.keys[i] for i in rows], "encoded": True}
        if self.shards:
            out["shard"] = [self.shards[i] for i in rows]
        for name, t in self.tensors.items():
            out[name] = t.index_select(0, idx).to(device) if device is not None else t.index_select(0, idx)
        return out

    def subset(self, index: Sequence[int] | Tensor) -> "EncodedSet":
        """A new set of the rows ``index`` (in that order)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        keys = [self.keys[i] for i in idx.tolist()]
        shards = [self.shards[i] for i in idx.tolist()] if self.shards else []
        return EncodedSet(keys, {n: t.index_select(0, idx) for n, t in self.tensors.items()}, shards)

    def batches(self, batch_size: int, order: Optional[Tensor] = None, device: Any = None) -> Iterator[Encoded]:
        """Consecutive batches over ``order`` (default: file order); the last one may be short."""
        order = torch.arange(len(self)) if order is None else order
        for s in range(0, len(order), batch_size):
            yield self.take(order[s : s + batch_size], device)


class EncodedLoader:
    """Batches of an :class:`EncodedSet` for rater training (a ``PairedLoader`` side).

    Shuffled with a seeded permutation per epoch (``set_epoch``), full batches only when
    ``drop_last``; the batches are marked ``encoded`` so the rater skips the encoders.
    """

    def __init__(self, data: EncodedSet, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        self.data, self.batch_size, self.shuffle, self.seed, self.drop_last = data, batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Encoded]:
        n = len(self.data)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            yield self.data.take(order[b * self.batch_size : (b + 1) * self.batch_size])


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """What names a map-style dataset's content: its keys, shard files (size, mtime) and image size."""
    keys = list(getattr(dataset, "keys", []) or [])
    h = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    urls = [str(u) for u in getattr(dataset, "urls", []) or []]
    stats = []
    for u in urls:
        try:
            st = os.stat(u)
            stats.append([u, st.st_size, int(st.st_mtime)])
        except OSError:  # a remote url: its name is all we know
            stats.append([u, None, None])
    decoder = getattr(dataset, "decoder", None)
    size = getattr(decoder, "image_size", None) or getattr(getattr(decoder, "cfg", None), "image_size", None)
    return {"n": len(keys), "keys": h, "shards": stats, "image_size": size}


def encodes_from_features(proxy: T2IProxy, store: Any, dataset: Any, batch_size: int = 256) -> EncodedSet:
    """A dataset's encodes read from a feature store (keys absent from it, i.e. undecodable, are skipped and counted)."""
    keys = [k for k in dataset.keys if k in store]
    shards: list[str] = []
    if hasattr(dataset, "shard_index_of"):
        present = set(keys)
        shards = [dataset.urls[dataset.shard_index_of(i)] for i, k in enumerate(dataset.keys) if k in present]
    device = next((b.device for b in proxy.buffers()), torch.device("cpu"))
    parts: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        for s in range(0, len(keys), batch_size):
            rows = {n: t.to(device) for n, t in store.rows(keys[s : s + batch_size]).items()}
            for name, value in proxy.from_features(rows).items():
                if isinstance(value, Tensor) and value.ndim >= 1:
                    parts.setdefault(name, []).append(value.detach().cpu())
    return EncodedSet(keys, {n: torch.cat(v) for n, v in parts.items()}, shards, len(dataset) - len(keys))


def encode_dataset(proxy: T2IProxy, dataset: Any, batch_size: int = 64, progress: bool = False,
                   collate_fn: Optional[Callable[[list], dict]] = None) -> EncodedSet:
    """Encode every sample of a map-style dataset in order (undecodable samples skipped and counted).

    ``collate_fn`` defaults to the data layer's ``collate_samples`` (which drops undecodable samples).
    """
    from torch.utils.data import DataLoader

    from lightning_alchemist.data.sample import collate_samples

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_fn or collate_samples)
    keys: list[str] = []
    shards: list[str] = []
    parts: dict[str, list[Tensor]] = {}
    device = next((b.device for b in proxy.buffers()), torch.device("cpu"))
    it = loader
    if progress:
        from lightning_alchemist.runtime import progress_bar

        it = progress_bar(loader, desc="encoding", unit="batch", leave=False)
    was = proxy.training
    proxy.eval()
    try:
        for batch in it:
            n = len(batch["key"])
            if n == 0:
                continue
            with torch.no_grad():
                enc = proxy.encode({**batch, "image": batch["image"].to(device)})
            keys.extend(enc.get("key") or batch["key"])
            shards.extend(batch.get("shard") or [])
            for name, value in enc.items():
                if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == n:
                    parts.setdefault(name, []).append(value.detach().cpu())
    finally:
        proxy.train(was)
    skipped = max(0, len(dataset) - len(keys))
    return EncodedSet(keys, {n: torch.cat(v) for n, v in parts.items()}, shards, skipped)


def cached_encodes(
    proxy: T2IProxy,
    dataset: Any,
    identity: Optional[Mapping[str, Any]] = None,
    cache_dir: Optional[str | Path] = None,
    batch_size: int = 64,
    progress: bool = False,
    collate_fn: Optional[Callable[[list], dict]] = None,
    features: Any = None,
) -> tuple[EncodedSet, dict[str, Any]]:
    """The dataset's encodes under the proxy's frozen encoders, from the cache or encoded now.

    ``features``: a :class:`~lightning_alchemist.features.store.FeatureStore` written by the same encoders;
    when it holds the dataset's keys, the encodes are read from it (no image is decoded, nothing is written here).
    The fingerprint is the same either way, so caches keyed by it (the proxy warm-up) are shared.

    Returns ``(encodes, info)`` with ``info = {"path", "fingerprint", "cached", "seconds"}``.
    """
    import time

    ident = dict(identity) if identity is not None else dataset_identity(dataset)
    digest = encoder_digest(proxy)
    payload = {"v": ENCODES_VERSION, "encoders": digest, "data": ident}
    fp = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "encodes"
    path = root / f"{fp}.pt"
    t0 = time.perf_counter()
    if features is not None and getattr(features, "encoders", None) == digest:
        enc = encodes_from_features(proxy, features, dataset)
        if len(enc):
            return enc, {"path": str(features.root), "fingerprint": fp, "cached": True, "seconds": time.perf_counter() - t0,
                         "features": True}
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            enc = EncodedSet(list(blob["keys"]), dict(blob["tensors"]), list(blob["shards"]), int(blob["skipped"]))
            return enc, {"path": str(path), "fingerprint": fp, "cached": True, "seconds": time.perf_counter() - t0}
        enc = encode_dataset(proxy, dataset, batch_size=batch_size, progress=progress, collate_fn=collate_fn)
        if enc.skipped:
            log.warning("encoding %s: %d undecodable samples skipped", path.name, enc.skipped)
        tmp = path.with_suffix(".pt.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"keys": enc.keys, "tensors": enc.tensors, "shards": enc.shards, "skipped": enc.skipped}, tmp)
        os.replace(tmp, path)
    return enc, {"path": str(path), "fingerprint": fp, "cached": False, "seconds": time.perf_counter() - t0}
