"""The combined loader of rater training: one validation pass per epoch, the pool cycling underneath.

Lightning's ``CombinedLoader`` modes either stop at the shorter loader (``min_size``) or cycle the
shorter one (``max_size_cycle``); neither gives the official epoch (one pass over the validation
loader while the much larger pool keeps streaming). :class:`PairedLoader` does: its length is the
validation loader's, and the pool iterator persists across epochs and restarts (re-shuffled, via
``set_epoch`` on its sampler) only when exhausted. Because it is not a ``DataLoader``, Lightning
injects no distributed sampler: under DDP both loaders must already be rank-aware (the
datamodule's are).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

__all__ = ["PairedLoader"]


def _set_epoch(loader: Any, epoch: int) -> None:
    for holder in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if holder is not None and callable(getattr(holder, "set_epoch", None)):
            holder.set_epoch(epoch)


class PairedLoader:
    """Yields ``{"pool": pool_batch, "val": val_batch}``; one epoch = one pass over ``val``.

    Args:
        pool: the pool loader (cycled; re-iterated with an increasing epoch when exhausted).
        val: the validation loader (one full pass per epoch).
    """

    def __init__(self, pool: Iterable, val: Iterable) -> None:
        self.pool = pool
        self.val = val
        self._pool_iter: Optional[Iterator] = None
        self._pool_epoch = 0
        self._val_epoch = 0

    def __len__(self) -> int:
        return len(self.val)  # type: ignore[arg-type]  # TypeError for unsized val: Lightning then runs to exhaustion

    def _next_pool(self) -> Any:
        for _ in range(2):
            if self._pool_iter is None:
                _set_epoch(self.pool, self._pool_epoch)
                self._pool_iter = iter(self.pool)
            try:
                return next(self._pool_iter)
            except StopIteration:
                self._pool_iter = None
                self._pool_epoch += 1
        raise RuntimeError("the pool loader yielded no batch: the pool is empty")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        _set_epoch(self.val, self._val_epoch)
        self._val_epoch += 1
        for val_batch in self.val:
            yield {"pool": self._next_pool(), "val": val_batch}
