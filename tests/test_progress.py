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


def test_progress_bar_without_a_terminal_prints_lines_not_frames(capsys):
    from lightning_alchemist.runtime import _LineProgress, progress_bar

    bar = progress_bar(range(5), desc="tokenizer", unit="step")  # pytest's captured stderr is not a terminal
    assert isinstance(bar, _LineProgress)
    bar.interval = 0.0
    for _ in bar:
        bar.set_postfix(rec="0.1")
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 6  # one line per step (interval 0) and the final one
    assert err.splitlines()[-1].startswith("tokenizer: 5/5 step") and "rec=0.1" in err
    quiet = progress_bar(total=3, desc="x")  # the default interval: only the final line
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err.count("\n") == 1
