"""A progress bar that shows samples/s while scoring."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["ScoringProgressBar"]


class ScoringProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar plus ``samples``, ``samples/s`` of this rank (the bar counts batches)."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.samples = 0
        self._t0 = 0.0

    @property
    def samples_per_second(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return self.samples / elapsed if elapsed > 0 else 0.0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.samples = 0
        self._t0 = time.perf_counter()

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.samples += len(batch["key"])
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix(samples=self.samples, samples_per_s=f"{self.samples_per_second:.1f}", refresh=False)
