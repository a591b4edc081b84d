"""Issue 16 #3: target training writes a resumable ``last.ckpt`` every N steps, keeps the last K, and a rerun
continues from it with the same data order and the same final weights (``resume=auto``; ``never`` starts over)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_alchemist.data.datamodule import build_datamodule
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.target.train import resume_checkpoint, train_target
from lightning_alchemist.target.trainer import TrainerConfig, trainer_config

MODEL = {"family": "star", "tokenizer": {"auto_train": False}}
FINETUNE = {"mode": "full", "lr": 3e-3, "warmup_steps": 2}


class Interrupt(RuntimeError):
    pass


class KeyLog(pl.Callback):
    """Records each training step's keys; raises after ``stop_after`` steps (a kill, as far as the checkpoints know)."""

    def __init__(self, stop_after: int = 0) -> None:
        self.keys: list[list[str]] = []
        self.stop_after = stop_after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stop_after and trainer.global_step >= self.stop_after:
            raise Interrupt(f"interrupted at step {trainer.global_step}")
        self.keys.append(list(batch["key"]))


def run(out, dm, log: KeyLog, selection=None, resume="auto"):
    cfg = TrainerConfig(max_steps=7, val_check_interval=None, limit_val_batches=1, enable_progress_bar=False,
                        checkpoint_every_n_steps=2, keep_checkpoints=2, log_every_n_steps=1)
    import lightning_alchemist.target.trainer as trainer_module

    original = trainer_module.build_trainer

    def with_log(*args, callbacks=(), **kw):
        return original(*args, callbacks=[*callbacks, log], **kw)

    trainer_module.build_trainer = with_log
    try:
        return train_target(MODEL, FINETUNE, cfg, dm, out, seed=3, selection=selection, resume=resume)
    finally:
        trainer_module.build_trainer = original


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def dm(small_shapes_cfg):
    # 5 batches per epoch: the interruption falls mid-epoch and the resumed run crosses an epoch boundary
    module = build_datamodule({**small_shapes_cfg, "batch_size": 64, "num_workers": 0}, seed=0)
    module.prepare_data()
    module.setup("fit")
    return module


def test_target_resumes_from_its_last_checkpoint_with_the_same_data_order_and_weights(tmp_path, dm):
    """The whole pool (the datamodule's own shuffle); through a selection, DataSelectionCallback restores its
    sampler the same way (tests/test_callback.py::test_resume_mid_epoch_continues_where_it_stopped)."""
    selection = None
    full = KeyLog()
    done = run(tmp_path / "full", dm, full, selection)
    assert done.steps == 7 and len(full.keys) == 7
    ckpts = sorted(p.name for p in (tmp_path / "full" / "train" / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step000004.ckpt", "step000006.ckpt"]  # every 2 steps, the latest 2 kept

    first = KeyLog(stop_after=3)  # killed after step 3: the last checkpoint is step 2, mid-epoch
    with pytest.raises(Interrupt):
        run(tmp_path / "cut", dm, first, selection)
    ckpt_dir = tmp_path / "cut" / "train" / "checkpoints"
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=False)["global_step"] == 2
    rest = KeyLog()
    resumed = run(tmp_path / "cut", dm, rest, selection)
    assert resumed.steps == 7
    assert first.keys[:2] + rest.keys == full.keys  # steps 3-7 read what the uninterrupted run read: nothing replayed
    a, b = weights(done.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resume=never: what the interrupted run left is deleted, training starts from step 0
    assert resume_checkpoint(ckpt_dir, "auto") == ckpt_dir / "last.ckpt"
    assert resume_checkpoint(ckpt_dir, "never") is None and not ckpt_dir.exists()


def test_checkpoint_settings_are_validated():
    with pytest.raises(ConfigError, match="trainer.checkpoint_every_n_steps': got 0"):
        trainer_config({"checkpoint_every_n_steps": 0})
    with pytest.raises(ConfigError, match="trainer.keep_checkpoints': got 0"):
        trainer_config({"keep_checkpoints": 0})
    assert trainer_config({}).checkpoint_every_minutes == 5.0  # default cadence: a few minutes of work
