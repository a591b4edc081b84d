"""Samplers over the selected samples of a map-style dataset, seeded by ``(seed, epoch)``.

Every rank computes the same global order for an epoch, so the samplers work both when
Lightning wraps them for DDP (``DistributedSamplerWrapper`` slices one shared order) and, as
:class:`DistributedWeightedSubsetSampler`, as the ``DistributedSampler`` itself (each rank takes
its own slice, without the wrapper's per-epoch Python list of every index). No
``torch.multinomial``: orders come from numpy (Gumbel-top-k, inverse CDF), exact at 100M items.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

from lightning_alchemist.selection.draw import index_dtype, make_rng, permutation, weighted_draw

__all__ = ["DistributedWeightedSubsetSampler", "WeightedSubsetSampler"]

MODES = ("subset", "weighted")
_CHUNK = 1 << 16


def _yield_ints(order: np.ndarray) -> Iterator[int]:
    # Convert in chunks: a Python list of 100M ints would cost gigabytes.
    for start in range(0, len(order), _CHUNK):
        yield from order[start : start + _CHUNK].tolist()


class WeightedSubsetSampler(Sampler[int]):
    """Each epoch, an order over the selected positions ``indices`` of a dataset.

    Args:
        indices: dataset positions of the selected samples.
        weights: sampling weight per entry of ``indices`` (``weighted`` mode; default uniform).
        mode: ``"subset"``: every epoch a fresh shuffle of exactly ``indices``.
            ``"weighted"``: every epoch ``num_samples`` draws ∝ weight.
        num_samples: draws per epoch in ``weighted`` mode (default ``len(indices)``).
        replacement: in ``weighted`` mode, draw with replacement.
        seed: the order is a function of ``(seed, epoch)`` only, identical on every rank.
        epoch_weights: ``epoch -> weights`` for schedules (curriculum); re-evaluated in :meth:`set_epoch`.
    """

    def __init__(
        self,
        indices: np.ndarray,
        weights: Optional[np.ndarray] = None,
        mode: str = "subset",
        num_samples: Optional[int] = None,
        replacement: bool = False,
        seed: int = 0,
        epoch_weights: Optional[Callable[[int], np.ndarray]] = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"sampler mode must be one of {MODES}, got {mode!r}")
        indices = np.asarray(indices)
        top = int(indices.max()) + 1 if len(indices) else 0
        self.indices = indices.astype(index_dtype(top), copy=False)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and len(self.weights) != len(self.indices):
            raise ValueError(f"{len(self.weights)} weights for {len(self.indices)} indices")
        self.mode = mode
        self.replacement = replacement
        self.seed = int(seed)
        self.epoch_weights = epoch_weights
        self.epoch = 0
        self.num_samples = len(self.indices) if num_samples is None or mode == "subset" else int(num_samples)
        if mode == "weighted" and not replacement:
            positive = len(self.indices) if self.weights is None else int((self.weights > 0).sum())
            if epoch_weights is None and self.num_samples > positive:
                raise ValueError(
                    f"num_samples={self.num_samples} exceeds the {positive} samples with positive weight; "
                    "use replacement=True or fewer samples"
                )
        self._cache: Optional[tuple[int, np.ndarray]] = None
        self._skip: Optional[tuple[int, int]] = None

    def skip_once(self, epoch: int, num: int) -> None:
        """Start ``epoch``'s next iteration at position ``num`` (resuming mid-epoch); ``__len__`` is unchanged."""
        self._skip = (int(epoch), int(num))

    def _take_skip(self) -> int:
        if self._skip is not None and self._skip[0] == self.epoch:
            num, self._skip = self._skip[1], None
            return num
        return 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields (Lightning calls this every epoch)."""
        self.epoch = int(epoch)

    def current_weights(self) -> Optional[np.ndarray]:
        """The weights in force this epoch (``None``: uniform)."""
        return self.epoch_weights(self.epoch) if self.epoch_weights is not None else self.weights

    def order(self, epoch: Optional[int] = None) -> np.ndarray:
        """The epoch's global order of dataset positions (int32 below 2^31 items)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = make_rng(self.seed, epoch)
        if self.mode == "subset":
            out = permutation(self.indices, rng)
        else:
            saved, self.epoch = self.epoch, epoch
            weights = self.current_weights()
            self.epoch = saved
            if weights is None:
                if self.replacement:
                    out = self.indices[rng.integers(0, len(self.indices), self.num_samples)]
                else:
                    out = self.indices[rng.permutation(len(self.indices))[: self.num_samples]]
            else:
                out = self.indices[weighted_draw(weights, self.num_samples, self.replacement, rng)]
        self._cache = (epoch, out)
        return out

    def __iter__(self) -> Iterator[int]:
        return _yield_ints(self.order()[self._take_skip() :])

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seed": self.seed, "mode": self.mode, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])


class DistributedWeightedSubsetSampler(DistributedSampler):
    """A :class:`WeightedSubsetSampler` sharded over ranks: rank ``r`` takes positions ``r::world``.

    Shares are disjoint and equal; when the epoch length does not divide by the world size, the
    order is padded with its first entries (``drop_last=False``) or cut (``drop_last=True``),
    like ``DistributedSampler``. Lightning leaves a ``DistributedSampler`` as it is.
    """

    def __init__(self, sampler: WeightedSubsetSampler, num_replicas: int = 1, rank: int = 0, drop_last: bool = False) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; we need neither.
        Sampler.__init__(self)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.sampler = sampler
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.shuffle = True
        self.seed = sampler.seed
        self.epoch = sampler.epoch
        total = len(sampler)
        self.num_samples = total // self.num_replicas if drop_last else -(-total // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def rank_order(self, epoch: Optional[int] = None) -> np.ndarray:
        """This rank's share of the epoch's global order."""
        order = self.sampler.order(self.epoch if epoch is None else epoch)
        if self.total_size > len(order):
            reps = -(-self.total_size // max(len(order), 1))
            order = np.tile(order, reps)[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]

    def skip_once(self, epoch: int, num: int) -> None:
        """Start this rank's next iteration of ``epoch`` at position ``num`` of its share."""
        self.sampler.skip_once(epoch, num)

    def __iter__(self) -> Iterator[int]:
        skip = self.sampler._take_skip()
        return _yield_ints(self.rank_order()[skip:])

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.epoch = self.sampler.epoch
