"""The streaming style: a webdataset pipeline over the same shards, yielding the same samples."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import webdataset as wds

from lightning_alchemist.data.decode import SampleDecoder

log = logging.getLogger(__name__)


def _log_and_continue(exn: Exception) -> bool:
    log.warning("webdataset: %s: %s (skipped, the run continues)", type(exn).__name__, exn)
    return True


def make_stream(
    urls: Sequence[str],
    decoder: SampleDecoder,
    *,
    key_filter: Optional[Callable[[str], bool]] = None,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    resampled: bool = False,
    samples_per_worker: Optional[int] = None,
) -> wds.DataPipeline:
    """A ``webdataset.DataPipeline`` of decoded samples (``None``-free), split by node and worker.

    Raw samples carry ``__key__`` until the decode stage, so key filters (the split here, a
    selection later) run before any image is decoded.

    Args:
        urls: expanded shard paths.
        decoder: shared with the map-style dataset, so both styles return the same samples.
        key_filter: keep only keys for which it returns True.
        shuffle: seeded shard shuffle plus a sample shuffle buffer (training); off keeps shard order.
        resampled: draw shards with replacement forever (equal-length epochs under DDP with
            ``samples_per_worker``).
        samples_per_worker: cap on what each worker yields per epoch (``with_epoch``).
    """
    urls = list(urls)
    if resampled:
        stages: list = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(urls)]
        if shuffle:
            stages.append(wds.detshuffle(bufsize=max(len(urls), 1), initial=max(len(urls), 1), seed=seed))
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(handler=_log_and_continue))
    if key_filter is not None:
        stages.append(wds.select(lambda raw: key_filter(raw["__key__"])))
    if shuffle and shuffle_buffer > 1:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed))
    stages.append(wds.map(decoder))
    stages.append(wds.select(lambda sample: sample is not None))
    pipeline = wds.DataPipeline(*stages)
    if samples_per_worker is not None:
        pipeline = pipeline.with_epoch(samples_per_worker)
    return pipeline
