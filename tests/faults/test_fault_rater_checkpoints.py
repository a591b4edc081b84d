"""Issue 16 #3 (rater part): the rater keeps its last K epoch checkpoints and a ``last.ckpt``, not every epoch."""

from __future__ import annotations

import pytest
import torch
from helpers import compose, set_group

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.rater.recipe import rater_checkpoint_callback, run_train_rater

TOY = {"class": "rater_toys.ToyProxy", "kwargs": {"image_size": 32, "patch": 8}}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def train(out, data_cfg):
    cfg = compose("config", [f"out={out}", "rater.proxy=null", "rater.epochs=3", "rater.network.depth=1",
                             "rater.network.width=16", "rater.network.heads=2", "rater.probe_size=16",
                             "rater.steps_per_epoch=1", "rater.score_with=rater", "rater.objective=official", "rater.warmup.steps=0"])
    for key, node in {"data": data_cfg, "model": TOY, "trainer": TRAINER}.items():
        set_group(cfg, key, node)
    return run_train_rater(cfg, keep_checkpoints=1)


def test_rater_keeps_the_last_k_epoch_checkpoints_and_last_ckpt_and_reruns_bit_for_bit(tmp_path, small_shapes_cfg):
    first = train(tmp_path / "run", small_shapes_cfg)
    assert sorted(p.name for p in (tmp_path / "run" / "rater_checkpoints").iterdir()) == ["epoch02.ckpt", "last.ckpt"]
    # issue 16 #12: the same seed and thread count train the same rater
    second = train(tmp_path / "again", small_shapes_cfg)
    a = torch.load(first, map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(second, map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="keep_checkpoints: got 0"):
        rater_checkpoint_callback(tmp_path, 0)
