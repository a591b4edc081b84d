"""Progress for logs: periodic one-line updates instead of a progress bar when output is not a terminal.

A progress bar written to a file or a CI log is either thousands of ``\\r`` updates (tqdm) or only its
last frame (rich). :class:`LogProgress` prints ``step 120/300 | 85.3 samples/s | loss 3.1042 | ETA 0:00:42``
every ``interval`` seconds and once at the end, from rank 0 only.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, Optional

import lightning.pytorch as pl

__all__ = ["LogProgress", "progress_settings"]


def _fmt_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class LogProgress(pl.Callback):
    """Print one line of training (or prediction) progress every ``interval`` seconds.

    Args:
        name: what is running, the line's prefix (``target``, ``rater``, ``scoring``).
        interval: seconds between lines (the first and the last step always print).
        stream: where to write (default ``sys.stdout``).
    """

    def __init__(self, name: str = "train", interval: float = 30.0, stream: Any = None) -> None:
        if interval < 0:
            raise ValueError(f"LogProgress: interval must be >= 0 seconds, got {interval}")
        self.name = name
        self.interval = float(interval)
        self.stream = stream
        self._t0 = 0.0
        self._last = 0.0
        self._samples = 0

    def _write(self, trainer: pl.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(f"[{self.name}] {text}", file=self.stream or sys.stdout, flush=True)

    def _start(self) -> None:
        self._t0 = self._last = time.monotonic()
        self._samples = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()

    @staticmethod
    def _batch_size(batch: Any) -> int:
        if isinstance(batch, dict):
            for value in batch.values():
                n = LogProgress._batch_size(value)
                if n:
                    return n
            return 0
        if isinstance(batch, (list, tuple)):
            return len(batch)
        return int(getattr(batch, "shape", [0])[0]) if hasattr(batch, "shape") else 0

    def _tick(self, trainer: pl.Trainer, step: int, total: Optional[int], batch: Any, loss: Optional[float]) -> None:
        self._samples += self._batch_size(batch)
        now = time.monotonic()
        last = total is not None and step >= total
        if not (step == 1 or last or now - self._last >= self.interval):
            return
        self._last = now
        elapsed = max(now - self._t0, 1e-9)
        parts = [f"step {step}/{total if total is not None else '?'}", f"{self._samples / elapsed:.1f} samples/s"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if total:
            parts.append(f"ETA {_fmt_eta(elapsed / step * (total - step))}")
        self._write(trainer, " | ".join(parts))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if hasattr(loss, "detach") else None
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None and trainer.max_epochs and trainer.num_training_batches not in (None, float("inf")):
            total = int(trainer.max_epochs * trainer.num_training_batches)
        self._tick(trainer, int(trainer.global_step) or batch_idx + 1, total, batch, value)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        batches = trainer.num_predict_batches[dataloader_idx] if trainer.num_predict_batches else None
        total = int(batches) if batches not in (None, float("inf")) else None
        self._tick(trainer, batch_idx + 1, total, batch, None)


def progress_settings(enabled: bool, name: str, interval: float = 30.0) -> tuple[bool, list[pl.Callback]]:
    """``(enable_progress_bar, callbacks)`` for a Trainer: a bar on a terminal, periodic lines otherwise."""
    if not enabled:
        return False, []
    if sys.stdout.isatty() and sys.stderr.isatty():
        return True, []
    return False, [LogProgress(name, interval)]
