"""A sampler for scoring: whole shards per rank, every sample exactly once, no padding."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch.distributed as dist
from torch.utils.data import DistributedSampler

from lightning_alchemist.data.mapstyle import ShardDataset


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ShardPartitionSampler(DistributedSampler):
    """Give shard ``i`` to rank ``i % world_size`` and yield its samples in shard order.

    Unlike ``DistributedSampler`` it never pads with duplicates, so ranks may yield different
    counts (fine for prediction, which has no per-step collectives). Subclassing
    ``DistributedSampler`` makes Lightning use it as is instead of wrapping it.

    Args:
        dataset: the map-style pool dataset.
        skip_stems: shard stems to leave out (already scored by an earlier, interrupted run).
        num_replicas, rank: default to the initialised process group (1 and 0 without one).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        skip_stems: Optional[Sequence[str]] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        world, me = _world()
        # Deliberately not calling DistributedSampler.__init__: it requires a process group and pads.
        self.dataset = dataset
        self.num_replicas = num_replicas if num_replicas is not None else world
        self.rank = rank if rank is not None else me
        self.epoch = 0
        skip = set(skip_stems or ())
        self.stems = [s.stem for i, s in enumerate(dataset.shards) if i % self.num_replicas == self.rank and s.stem not in skip]
        mine = {i for i, s in enumerate(dataset.shards) if i % self.num_replicas == self.rank and s.stem not in skip}
        self.indices = [i for i in range(len(dataset)) if dataset.shard_index_of(i) in mine]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
