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
        self._pool_pos = 0  # pool batches drawn in the current pool pass
        self._val_epoch = 0
        self._pass_start = self.position()  # where the current validation pass started
        self._skip: Optional[tuple[int, int]] = None  # (pool draws, validation batches) to skip when resuming

    def __len__(self) -> int:
        return len(self.val)  # type: ignore[arg-type]  # TypeError for unsized val: Lightning then runs to exhaustion

    def position(self) -> dict[str, int]:
        """Where the next validation pass starts: its epoch, and the pool's pass and draws into it."""
        return {"val_epoch": self._val_epoch, "pool_epoch": self._pool_epoch, "pool_pos": self._pool_pos}

    def state_at(self, batches_done: int) -> dict[str, int]:
        """The position to resume from after ``batches_done`` batches of the current pass (0: the next pass).

        Taken from where the pass started plus the batches trained, not from the live counters: Lightning
        fetches a batch ahead, so those run one draw past a mid-epoch checkpoint.
        """
        if batches_done <= 0:
            return {**self.position(), "batches_done": 0}
        return {**self._pass_start, "batches_done": int(batches_done)}

    def restore(self, state: dict[str, int]) -> None:
        """Continue at ``state`` (from :meth:`state_at`): the next pass reads what the interrupted run would have read."""
        self._val_epoch, self._pool_epoch = int(state["val_epoch"]), int(state["pool_epoch"])
        self._pool_iter, self._pool_pos = None, 0
        self._pass_start = {k: int(state[k]) for k in ("val_epoch", "pool_epoch", "pool_pos")}
        done = int(state.get("batches_done", 0))
        self._skip = (int(state["pool_pos"]) + done, done)

    def _next_pool(self) -> Any:
        for _ in range(2):
            if self._pool_iter is None:
                _set_epoch(self.pool, self._pool_epoch)
                self._pool_iter = iter(self.pool)
                self._pool_pos = 0
            try:
                batch = next(self._pool_iter)
                self._pool_pos += 1
                return batch
            except StopIteration:
                self._pool_iter = None
                self._pool_epoch += 1
        raise RuntimeError("the pool loader yielded no batch: the pool is empty")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skip_pool, skip_val = self._skip or (0, 0)
        self._skip = None
        for _ in range(skip_pool):  # resuming: the pool batches the interrupted run already drew (bounded by its steps)
            self._next_pool()
        if not skip_val:
            self._pass_start = self.position()
        _set_epoch(self.val, self._val_epoch)
        self._val_epoch += 1
        for i, val_batch in enumerate(self.val):
            if i < skip_val:
                continue
            yield {"pool": self._next_pool(), "val": val_batch}
