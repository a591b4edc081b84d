"""Process-wide run settings, applied once at the start of a run."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

__all__ = ["distributed_guard", "fixed_threads", "peer_failure", "progress_bar", "set_threads"]

log = logging.getLogger(__name__)


def set_threads(num_threads: Optional[int]) -> None:
    """``torch.set_num_threads`` for the whole run (``None`` leaves torch's default).

    Called once, before the first stage: a tokenizer or judge trained on first use runs before any
    trainer, and oversubscribed cores (more threads than free cores) run several times slower.
    """
    if not num_threads:
        return
    import torch

    if torch.get_num_threads() != int(num_threads):
        torch.set_num_threads(int(num_threads))
        log.debug("torch threads: %d", num_threads)


@contextmanager
def fixed_threads(num_threads: int = 1) -> Iterator[None]:
    """Run the block with ``num_threads`` torch CPU threads, then restore the caller's count.

    For models trained on first use and cached under a key that does not name the thread count (the tiny
    tokenizer, the shapes judge): CPU kernels reduce in a thread-dependent order, so 1 and 2 threads give
    different weights, and whichever run trained the artifact first would define it for every later run.
    """
    import torch

    before = torch.get_num_threads()
    set_threads(num_threads)
    try:
        yield
    finally:
        set_threads(before)


class _LineProgress:
    """tqdm's interface for logs: one line every ``interval`` seconds (and at the end), never ``\\r`` frames."""

    def __init__(self, iterable: Any = None, total: Optional[int] = None, desc: str = "", unit: str = "it",
                 interval: float = 30.0, stream: Any = None) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.interval = desc, unit, interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self._t0 = self._last = time.monotonic()

    def _line(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = self.n / elapsed
        parts = [f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'} {self.unit}", f"{rate:.1f} {self.unit}/s"]
        if self.total and not final and rate > 0:
            parts.append(f"ETA {int((self.total - self.n) / rate)} s")
        if self.postfix:
            parts.append(self.postfix)
        print(" | ".join(parts), file=self.stream or sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n:
            self._line(final=True)
            self.n = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()


def progress_bar(iterable: Any = None, total: Optional[int] = None, desc: str = "", unit: str = "it", **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal; periodic one-line progress when output goes to a file or a CI log."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_kwargs)
    return _LineProgress(iterable, total=total, desc=desc, unit=unit)


# What torch.distributed's backends say when a peer process is gone (gloo, NCCL, the TCP store, a timeout).
_PEER_SIGNS = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused",
               "processgroupgloo", "processgroupnccl", "nccl error", "gloo", "timed out", "timeout", "sigterm")


def peer_failure(err: BaseException) -> Optional[str]:
    """One line saying why a distributed collective failed, when ``err`` is a lost peer; else None."""
    try:
        import torch.distributed as dist

        dist_error = isinstance(err, getattr(dist, "DistError", ()))
    except ImportError:
        dist_error = False
    name = type(err).__name__
    text = " ".join(str(err).split())
    if dist_error or name == "SIGTERMException" or (isinstance(err, RuntimeError) and any(s in text.lower() for s in _PEER_SIGNS)):
        detail = text[:160] or name
        return f"{name}: {detail}"
    return None


@contextmanager
def distributed_guard(what: str, world_size: int) -> Iterator[None]:
    """Turn a lost peer of a multi-process run (``world_size > 1``) into one :class:`PeerLostError` line.

    When one rank dies (kill -9, out of memory, a lost node), the others fail in their next collective
    (gloo/NCCL: "connection closed by peer", or the process group's timeout): a traceback from deep inside
    torch. This says what happened and how to go on instead.
    """
    try:
        yield
    except Exception as err:
        if world_size <= 1:
            raise
        why = peer_failure(err)
        if why is None:
            raise
        from lightning_alchemist.errors import PeerLostError

        raise PeerLostError(f"{what}: another process of this {world_size}-process run stopped ({why}); this one stops "
                            "too. Rerun the same command: resume=auto continues from the last checkpoint") from None
