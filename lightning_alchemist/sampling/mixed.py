"""Batches mixed across clusters: each batch spans as many concept clusters as the epoch allows.

Plain shuffling puts, on average, ``B · n_c / N`` samples of a cluster of size ``n_c`` in a batch of ``B``, with
binomial spread: big clusters crowd some batches and small ones cluster by chance. :func:`mixed_order`
interleaves instead: each cluster's samples (shuffled) are spread evenly over the epoch, item ``j`` of cluster
``c`` at the fractional position ``(j + u_c) / n_c`` with a random phase ``u_c`` per cluster and epoch. With
equal clusters this is a round-robin over shuffled per-cluster queues (in a random cluster order); with unequal
ones, the samples of a cluster never sit closer than ``N / n_c`` apart, so any window of ``B`` consecutive
samples holds about ``B · n_c / N`` of each cluster, and no window runs dry of small clusters at the end.

:class:`ClusterMixedSampler` applies it on top of any :class:`WeightedSubsetSampler` order (a subset shuffle, a
weighted draw, a curriculum), seeded by ``(seed, epoch)`` and the same on every rank; rank ``r`` of ``W`` takes
the ``r``-th contiguous piece of the mixed order (not every ``W``-th sample, which with ``K`` clusters in a
round-robin would give a rank only ``K / gcd(K, W)`` clusters), so each rank's batches are mixed too.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_alchemist.errors import DataError
from lightning_alchemist.sampling.samplers import DistributedWeightedSubsetSampler, WeightedSubsetSampler, _yield_ints
from lightning_alchemist.selection.draw import make_rng

__all__ = ["BATCHING", "ClusterMixedSampler", "cluster_ids", "distinct_per_batch", "mixed_order"]

BATCHING = ("shuffle", "mixed")
_MIX_STREAM = 0x6D6978  # "mix": the mixing draws use their own stream, apart from the base order's


def mixed_order(items: np.ndarray, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``items`` reordered so that each cluster's items are spread evenly over the order.

    Args:
        items: the epoch's items (dataset positions; repeats allowed, e.g. a draw with replacement).
        clusters: the cluster id of each entry of ``items`` (any integers; ``-1`` = unclustered: each such item
            is its own cluster, i.e. it lands at a uniformly random place).
        rng: the epoch's generator.

    Returns:
        a permutation of ``items`` (every entry exactly once).
    """
    items = np.asarray(items)
    clusters = np.asarray(clusters, dtype=np.int64)
    n = len(items)
    if len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} items")
    if n == 0:
        return items.copy()
    shuffle = rng.permutation(n)  # random order inside each cluster
    groups = clusters[shuffle]
    alone = groups < 0
    if alone.any():  # unclustered items: singletons, with ids past every real cluster
        top = int(groups.max()) + 1 if (~alone).any() else 0
        groups = groups.copy()
        groups[alone] = top + np.arange(int(alone.sum()))
    by_group = np.argsort(groups, kind="stable")
    g = groups[by_group]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, n])
    which = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(n) - starts[which]
    phase = rng.random(len(starts))
    pos = (rank + phase[which]) / sizes[which]
    return items[shuffle[by_group[np.argsort(pos, kind="stable")]]]


def distinct_per_batch(order: np.ndarray, clusters: np.ndarray, batch_size: int) -> np.ndarray:
    """The number of distinct clusters in each full batch of ``order`` (``clusters`` indexed by item)."""
    full = len(order) // batch_size * batch_size
    ids = np.asarray(clusters)[np.asarray(order)[:full]].reshape(-1, batch_size)
    ids = np.sort(ids, axis=1)
    return 1 + (ids[:, 1:] != ids[:, :-1]).sum(axis=1)


ClusterSource = Union[np.ndarray, "list[int]", pa.Table, str, "os.PathLike[str]"]


def cluster_ids(keys: Any, source: ClusterSource, column: str = "cluster") -> np.ndarray:
    """The cluster id of each of ``keys`` (a dataset's keys in position order), ``-1`` where none is given.

    Args:
        keys: the dataset's keys (a list, a pyarrow array), one per position.
        source: an array of ids in the same position order (its length must match), or a table / Parquet file
            with ``key`` and ``column`` columns (e.g. a curation ``selection.parquet``), joined on the key.
        column: the cluster column's name.

    Raises:
        DataError: one line naming the source and what is wrong (length, missing column, no key matching).
    """
    n = len(keys)
    if isinstance(source, (str, os.PathLike)) or isinstance(source, pa.Table):
        where = str(source) if not isinstance(source, pa.Table) else "the cluster table"
        if isinstance(source, pa.Table):
            table = source
        else:
            try:
                table = pq.read_table(source, columns=None)
            except Exception as err:
                raise DataError(f"clusters '{where}': cannot read it as Parquet ({type(err).__name__}: {err}); "
                                "pass a file with 'key' and 'cluster' columns") from None
        missing = {"key", column} - set(table.column_names)
        if missing:
            raise DataError(f"clusters '{where}': no column(s) {sorted(missing)} (has {table.column_names}); "
                            f"pass a table of key and {column}")
        value_set = table.column("key").cast(pa.string()).combine_chunks()
        arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array([str(k) for k in keys], pa.string())
        rows = pc.index_in(arr, value_set=value_set)
        found = rows.is_valid().to_numpy(zero_copy_only=False)
        if n and not found.any():
            raise DataError(f"clusters '{where}': none of its {len(value_set)} keys is in the dataset of {n} samples; "
                            "pass the cluster ids of this dataset")
        ids = table.column(column).to_numpy().astype(np.int64)
        out = np.full(n, -1, dtype=np.int64)
        out[found] = ids[rows.filter(rows.is_valid()).to_numpy().astype(np.int64)]
        return out
    ids = np.asarray(source)
    if ids.ndim != 1 or len(ids) != n:
        raise DataError(f"clusters: {ids.shape} cluster ids for a dataset of {n} samples; give one id per sample (-1: none)")
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"clusters: ids must be integers, got {ids.dtype}")
    return ids.astype(np.int64, copy=False)


class ClusterMixedSampler(DistributedWeightedSubsetSampler):
    """A sampler whose batches span many clusters: the base sampler's epoch order, reordered by :func:`mixed_order`.

    A ``DistributedSampler`` (Lightning leaves it as it is under DDP). Every rank computes the same mixed order
    from ``(seed, epoch)``; rank ``r`` takes the ``r``-th of ``num_replicas`` contiguous, equal pieces of it
    (padded with the order's first entries, or cut with ``drop_last``), disjoint across ranks.

    Args:
        sampler: the base order (which items, how often): a :class:`WeightedSubsetSampler`.
        clusters: the cluster id of every dataset position (``-1``: unclustered), e.g. from :func:`cluster_ids`.
        num_replicas, rank, drop_last: as for ``DistributedSampler``.
    """

    def __init__(self, sampler: WeightedSubsetSampler, clusters: np.ndarray, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(sampler, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.clusters = np.asarray(clusters, dtype=np.int64)
        top = int(sampler.indices.max()) + 1 if len(sampler.indices) else 0
        if len(self.clusters) < top:
            raise DataError(f"clusters: {len(self.clusters)} cluster ids but the sampler reaches dataset position {top - 1}; "
                            "give one id per dataset sample")
        self._mixed: Optional[tuple[int, np.ndarray]] = None

    def order(self, epoch: Optional[int] = None) -> np.ndarray:
        """The epoch's global mixed order (identical on every rank)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._mixed is None or self._mixed[0] != epoch:
            base = self.sampler.order(epoch)
            mixed = mixed_order(base, self.clusters[base], make_rng(self.sampler.seed, epoch, _MIX_STREAM))
            self._mixed = (epoch, mixed)
        return self._mixed[1]

    def rank_order(self, epoch: Optional[int] = None) -> np.ndarray:
        """This rank's contiguous piece of the epoch's mixed order."""
        order = self.order(epoch)
        if self.total_size > len(order):
            reps = -(-self.total_size // max(len(order), 1))
            order = np.tile(order, reps)[: self.total_size]
        return order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]

    def __iter__(self) -> Iterator[int]:
        skip = self.sampler._take_skip()
        return _yield_ints(self.rank_order()[skip:])
