"""The streaming style: a webdataset pipeline over the same shards, yielding the same samples."""

from __future__ import annotations

import logging
import random
from typing import Callable, Optional, Sequence

import webdataset as wds

from lightning_alchemist.data.decode import SampleDecoder

log = logging.getLogger(__name__)


class _CycleShards:
    """Repeat this worker's share of shards forever, reshuffled (seeded) on every pass.

    Placed after the node and worker splits, it keeps ranks disjoint while letting every rank
    stream as long as ``with_epoch`` asks, so DDP ranks step equally.
    """

    def __init__(self, seed: int, shuffle: bool) -> None:
        self.seed, self.shuffle = seed, shuffle

    def __call__(self, src):
        shards = list(src)
        if not shards:
            return
        rng = random.Random(self.seed)
        while True:
            if self.shuffle:
                rng.shuffle(shards)
            yield from shards


def _log_and_continue(exn: Exception) -> bool:
    log.warning("webdataset: %s: %s (skipped, the run continues)", type(exn).__name__, exn)
    return True


class _KeyPredicate:
    """``raw -> key_filter(raw["__key__"])`` as a picklable object (spawned workers)."""

    def __init__(self, key_filter: Callable[[str], bool]) -> None:
        self.key_filter = key_filter

    def __call__(self, raw: dict) -> bool:
        return self.key_filter(raw["__key__"])


class _SkipCopies:
    """Drop the ``(shard url, key)`` pairs the map-style index left out (later copies of duplicated keys)."""

    def __init__(self, pairs: set[tuple[str, str]]) -> None:
        self.pairs = pairs

    def __call__(self, raw: dict) -> bool:
        return (raw.get("__url__"), raw["__key__"]) not in self.pairs


def _is_sample(sample: object) -> bool:
    return sample is not None


def make_stream(
    urls: Sequence[str],
    decoder: SampleDecoder,
    *,
    key_filter: Optional[Callable[[str], bool]] = None,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    cycle: bool = False,
    samples_per_worker: Optional[int] = None,
    exclude: Optional[set[tuple[str, str]]] = None,
) -> wds.DataPipeline:
    """A ``webdataset.DataPipeline`` of decoded samples (``None``-free), split by node and worker.

    Raw samples carry ``__key__`` until the decode stage, so key filters (the split here, a
    selection later) run before any image is decoded.

    Args:
        urls: expanded shard paths.
        decoder: shared with the map-style dataset, so both styles return the same samples.
        key_filter: keep only keys for which it returns True.
        shuffle: seeded shard shuffle plus a sample shuffle buffer (training); off keeps shard order.
        cycle: repeat each worker's own shards forever (ranks stay disjoint); with
            ``samples_per_worker`` this gives equal-length epochs on every DDP rank.
        samples_per_worker: cap on what each worker yields per epoch (``with_epoch``).
        exclude: ``(shard url, key)`` pairs to drop, e.g. ``ShardDataset.skipped_duplicates``, so
            both styles skip the same later copies of a duplicated key.
    """
    urls = list(urls)
    stages: list = [wds.SimpleShardList(urls)]
    if shuffle:
        stages.append(wds.detshuffle(bufsize=max(len(urls), 1), initial=max(len(urls), 1), seed=seed))
    stages += [wds.split_by_node, wds.split_by_worker]
    if cycle:
        stages.append(_CycleShards(seed, shuffle))
    stages.append(wds.tarfile_to_samples(handler=_log_and_continue))
    if key_filter is not None:
        stages.append(wds.select(_KeyPredicate(key_filter)))
    if exclude:
        stages.append(wds.select(_SkipCopies(set(exclude))))
    if shuffle and shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed))
    stages.append(wds.map(decoder))
    stages.append(wds.select(_is_sample))
    pipeline = wds.DataPipeline(*stages)
    if samples_per_worker is not None:
        pipeline = pipeline.with_epoch(samples_per_worker)
    return pipeline
