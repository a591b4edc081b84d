"""Process-wide run settings, applied once at the start of a run."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterator, Optional

__all__ = ["progress_bar", "set_threads"]

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
