"""Issue 16 #3 (rater part): the rater keeps its last K epoch checkpoints and a ``last.ckpt``, not every epoch."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lightning_alchemist.cli import check_overrides
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.rater.recipe import rater_checkpoint_callback, run_train_rater

TOY = {"class": "rater_toys.ToyProxy", "kwargs": {"image_size": 32, "patch": 8}}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def test_rater_keeps_the_last_k_epoch_checkpoints_and_last_ckpt(tmp_path, small_shapes_cfg):
    out = tmp_path / "run"
    cfg = check_overrides("config", [f"out={out}", "rater.proxy=null", "rater.epochs=3", "rater.network.depth=1",
                                     "rater.network.width=16", "rater.network.heads=2", "rater.probe_size=16",
                                     "rater.steps_per_epoch=1"])
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with({"data": small_shapes_cfg, "model": TOY, "trainer": TRAINER})
    run_train_rater(cfg, keep_checkpoints=1)
    assert sorted(p.name for p in (out / "rater_checkpoints").iterdir()) == ["epoch02.ckpt", "last.ckpt"]
    with pytest.raises(ConfigError, match="keep_checkpoints: got 0"):
        rater_checkpoint_callback(tmp_path, 0)
