"""Progress in logs: one line per interval when output is not a terminal, never a flood of bar frames."""

from __future__ import annotations

import io

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_alchemist.callbacks.progress import LogProgress, progress_settings


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(progress: LogProgress, steps: int) -> None:
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[progress], accelerator="cpu")
    trainer.fit(Tiny(), data)


def test_log_progress_prints_step_rate_loss_and_eta():
    out = io.StringIO()
    _fit(LogProgress("target", interval=0.0, stream=out), steps=5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("[target] step 5/5")
    for part in ("samples/s", "loss ", "ETA 0:00:00"):
        assert part in lines[-1], lines[-1]


def test_log_progress_is_quiet_between_intervals():
    out = io.StringIO()
    _fit(LogProgress("target", interval=3600.0, stream=out), steps=6)
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["[target] step 1/6", "[target] step 6/6"]  # first and last only


def test_progress_settings_without_a_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    bar, callbacks = progress_settings(True, "rater")
    assert bar is False and isinstance(callbacks[0], LogProgress)
    assert progress_settings(False, "rater") == (False, [])
