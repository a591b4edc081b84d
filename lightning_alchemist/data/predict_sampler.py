"""Samplers for scoring: whole shards per rank, every sample exactly once, no padding; batches within one shard."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

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



def shard_batches(sampler: ShardPartitionSampler, batch_size: int) -> list[list[int]]:
    """``sampler``'s indices cut into batches of at most ``batch_size`` that never span two shards.

    A signal that compares a sample with its batch mates (the caption contrast rolls captions within a
    batch) then rates every sample the same whichever shards a resumed scoring run skips and however many
    ranks share the pool: each shard is cut into the same batches every time (its last one may be short).
    """
    out: list[list[int]] = []
    current = None
    for i in sampler:
        shard = sampler.dataset.shard_index_of(i)
        if not out or shard != current or len(out[-1]) == batch_size:
            out.append([])
        current = shard
        out[-1].append(i)
    return out


class BatchedView(Dataset):
    """Item ``j`` is batch ``j`` of ``batches`` (indices into ``dataset``), collated by ``collate``.

    Served with ``DataLoader(batch_size=None)``: the loader's workers read whole batches, and no batch
    sampler exists for Lightning to re-create around its own sampler.
    """

    def __init__(self, dataset: Any, batches: list[list[int]], collate: Callable[[list[Any]], Any]) -> None:
        self.dataset, self.batches, self.collate = dataset, batches, collate

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, j: int) -> Any:
        return self.collate([self.dataset[i] for i in self.batches[j]])


class InOrder(DistributedSampler):
    """``0 .. n-1`` in order on this rank (the rank's part was chosen already): a ``DistributedSampler`` so that
    Lightning does not wrap it in one of its own."""

    def __init__(self, n: int) -> None:  # deliberately not DistributedSampler.__init__ (no process group needed)
        self.n, self.epoch = n, 0

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
