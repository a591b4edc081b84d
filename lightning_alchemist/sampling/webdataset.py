"""Selection for streaming (webdataset) pipelines: a key filter stage and epoch sizing.

An iterable dataset has no sampler: the selection becomes a pipeline stage placed right after
samples are formed from the tar members (before decoding, so dropped samples cost no decode):
``subset`` keeps the selected keys, ``weighted`` keeps each selected key with a probability
∝ its weight, drawn from a hash of ``(seed, epoch, key)`` (the same on every rank and worker).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa

from lightning_alchemist.data.tarscan import sample_key, scan_tar
from lightning_alchemist.selection.ratings import key_hash, key_hashes

__all__ = ["KeyFilter", "batch_size_of", "find_insert_position", "scan_tar_keys", "shard_urls", "stream_key_filters"]

_SAMPLE_FORMERS = ("group_by_keys", "tarfile_samples", "check_empty")


def _uniform(seed: int, epoch: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


class KeyFilter:
    """Pipeline stage: pass only selected samples (by ``__key__``, or ``key`` once decoded).

    Keys are held as sorted 64-bit hashes (8 bytes per key, shared copy-on-write with forked
    workers), not as a Python set: 100M selected keys fit in under a gigabyte.

    Args:
        keys: the selected keys.
        probs: per key, the probability of keeping it in an epoch (default 1: a plain subset).
        seed: with the epoch, fixes which keys a weighted epoch keeps.
    """

    def __init__(self, keys: Any, probs: Optional[np.ndarray] = None, seed: int = 0) -> None:
        keys = keys if isinstance(keys, pa.ChunkedArray) else pa.chunked_array([pa.array(list(keys), pa.string())])
        hashes = key_hashes(keys)
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.probs = None if probs is None or np.all(np.asarray(probs) >= 1.0) else np.asarray(probs, np.float64)[order]
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.hashes)

    def set_epoch(self, epoch: int) -> None:
        """Change the weighted draw; takes effect in workers started after the call (not persistent ones)."""
        self.epoch = int(epoch)

    def keeps(self, key: str) -> bool:
        h = np.uint64(key_hash(key))
        i = int(np.searchsorted(self.hashes, h))
        if i >= len(self.hashes) or self.hashes[i] != h:
            return False
        if self.probs is None:
            return True
        p = self.probs[i]
        return bool(p >= 1.0 or _uniform(self.seed, self.epoch, key) < p)

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for sample in samples:
            key = sample.get("__key__", sample.get("key")) if isinstance(sample, dict) else None
            if key is not None and self.keeps(key):
                yield sample

    def __repr__(self) -> str:
        return f"KeyFilter(keys={len(self)}, seed={self.seed}, epoch={self.epoch})"


def _stage_name(stage: Any) -> str:
    f = getattr(stage, "f", stage)
    return getattr(f, "__name__", type(stage).__name__)


def find_insert_position(pipeline: Any) -> Optional[int]:
    """Index just after the stage that forms ``__key__`` samples from tar members (None if absent)."""
    stages = getattr(pipeline, "pipeline", None)
    if not isinstance(stages, list):
        return None
    found = None
    for i, stage in enumerate(stages):
        if _stage_name(stage) in _SAMPLE_FORMERS:
            found = i + 1
    return found


def batch_size_of(pipeline: Any) -> Optional[int]:
    """The batch size of a ``.batched(n)`` stage in the pipeline, if any (then it yields batches)."""
    for stage in getattr(pipeline, "pipeline", []):
        if _stage_name(stage) == "_batched":
            kw = getattr(stage, "kw", {})
            args = getattr(stage, "args", ())
            return int(kw.get("batchsize", args[0] if args else 20))
    return None


def stream_key_filters(pipeline: Any) -> list[Any]:
    """The key predicates of the pipeline's ``select`` stages that declare one (``pred.key_filter(key)``).

    The datamodule's stream keeps only its split's keys with such a stage; applying the same
    predicates to the scanned keys counts what the stream can actually yield (the pool without the
    held-out validation keys).
    """
    out = []
    for stage in getattr(pipeline, "pipeline", []):
        if _stage_name(stage) != "_select":
            continue
        args = getattr(stage, "args", ())
        pred = args[0] if args else getattr(stage, "kw", {}).get("predicate")
        key_filter = getattr(pred, "key_filter", None)
        if callable(key_filter):
            out.append(key_filter)
    return out


def shard_urls(pipeline: Any) -> Optional[list[str]]:
    """The shard list of a webdataset pipeline (its first stage), or None if it cannot be read."""
    stages = getattr(pipeline, "pipeline", None)
    if not stages:
        return None
    urls = getattr(stages[0], "urls", None)
    if isinstance(urls, str):
        import braceexpand

        urls = list(braceexpand.braceexpand(urls))
    return list(urls) if urls else None


def scan_tar_keys(urls: list[str], truncated: Optional[list[str]] = None) -> Optional[list[str]]:
    """Every sample key in local tar shards, from the headers only; None if a shard is not a local file.

    A truncated or corrupt shard contributes the samples before the break, less the last one when
    the break may have cut it, exactly as the shard index counts them; its path is appended to
    ``truncated`` when given.
    """
    keys: list[str] = []
    for url in urls:
        path = Path(url[len("file:") :] if url.startswith("file:") else url)
        if not path.is_file():
            return None
        scan = scan_tar(str(path))
        shard_keys: list[str] = []
        for member in scan.members:
            parsed = sample_key(member.name)
            if parsed is None or "/__" in "/" + member.name:
                continue
            if not shard_keys or parsed[0] != shard_keys[-1]:
                shard_keys.append(parsed[0])
        if scan.truncated:
            if shard_keys and scan.last_sample_cut(shard_keys[-1]):
                shard_keys.pop()
            if truncated is not None:
                truncated.append(str(path))
        keys.extend(shard_keys)
    return keys


def per_worker_epoch(total: float, world_size: int, num_workers: int, batch_size: Optional[int]) -> int:
    """Items each worker's pipeline yields per epoch so every rank covers ``total`` samples jointly."""
    per_rank = total / max(world_size, 1)
    per_worker = per_rank / max(num_workers, 1)
    if batch_size:
        per_worker /= batch_size
    return max(1, math.ceil(per_worker))
