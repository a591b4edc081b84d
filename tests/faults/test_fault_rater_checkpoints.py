"""Issue 16 #3 (rater part): the rater keeps its last K checkpoints and a ``last.ckpt``, not every epoch, and a rerun
of an interrupted training (``resume=auto``) continues from it with the same data and ends with the same rater."""

from __future__ import annotations

import pytest
import torch
from helpers import compose, set_group

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.rater.config import rater_config, rater_identity
from lightning_alchemist.rater.module import RaterModule
from lightning_alchemist.rater.recipe import rater_checkpoint_callback, run_train_rater

TOY = {"class": "rater_toys.ToyProxy", "kwargs": {"image_size": 32, "patch": 8}}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def train(out, data_cfg, *extra, keep=None):
    base = {"rater.proxy": "null", "rater.epochs": "3", "rater.network.depth": "1", "rater.network.width": "16",
            "rater.network.heads": "2", "rater.probe_size": "16", "rater.steps_per_epoch": "1", "rater.score_with": "rater",
            "rater.objective": "official", "rater.warmup.steps": "0"}
    base.update(dict(o.split("=", 1) for o in extra))
    cfg = compose("config", [f"out={out}", *(f"{k}={v}" for k, v in base.items())])
    for key, node in {"data": data_cfg, "model": TOY, "trainer": TRAINER}.items():
        set_group(cfg, key, node)
    return run_train_rater(cfg, keep_checkpoints=keep)


def state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rater_keeps_the_last_k_epoch_checkpoints_and_last_ckpt_and_reruns_bit_for_bit(tmp_path, small_shapes_cfg):
    first = train(tmp_path / "run", small_shapes_cfg, keep=1)
    assert sorted(p.name for p in (tmp_path / "run" / "rater_checkpoints").iterdir()) == ["epoch02.ckpt", "last.ckpt"]
    # issue 16 #12: the same seed and thread count train the same rater
    second = train(tmp_path / "again", small_shapes_cfg, keep=1)
    assert same(state(first), state(second))
    with pytest.raises(ConfigError, match="keep_checkpoints: got 0"):
        rater_checkpoint_callback(tmp_path, 0)
    with pytest.raises(ConfigError, match="rater.checkpoint_every_n_steps': got 0"):
        rater_config({"checkpoint_every_n_steps": 0})


class Interrupt(RuntimeError):
    pass


def test_an_interrupted_rater_resumes_mid_epoch_and_ends_with_the_same_weights(tmp_path, small_shapes_cfg, monkeypatch):
    # 3 validation batches an epoch, 11 pool batches a pass: the resumed run continues mid-epoch and wraps the pool
    data = {**small_shapes_cfg, "batch_size": 32, "num_workers": 0}
    # Lightning counts one step per optimiser step: 2 per batch while the proxy trains with the rater
    steps = ["rater.epochs=5", "rater.steps_per_epoch=null", "rater.checkpoint_every_n_steps=4", "rater.keep_checkpoints=2"]
    full = state(train(tmp_path / "full", data, *steps))
    assert sorted(p.name for p in (tmp_path / "full" / "rater_checkpoints").iterdir()) == [
        "last.ckpt", "step000024.ckpt", "step000028.ckpt"]

    original = RaterModule.training_step

    def killed_at_9(self, batch, batch_idx):  # killed in batch 10, 9 batches (18 steps) done
        if self.global_step >= 18:
            raise Interrupt("killed")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(RaterModule, "training_step", killed_at_9)
    with pytest.raises(Interrupt):
        train(tmp_path / "cut", data, *steps)
    monkeypatch.setattr(RaterModule, "training_step", original)
    last = tmp_path / "cut" / "rater_checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 16  # 8 batches: epoch 2, 2 of its 3 batches done
    resumed = state(train(tmp_path / "cut", data, *steps))
    assert same(full, resumed)
    # the cadence is not part of what names the trained rater (its cache fingerprint)
    assert rater_identity(rater_config({"checkpoint_every_n_steps": 5})) == rater_identity(rater_config({}))


def test_an_interrupted_proxy_warm_up_resumes_from_its_saved_state_and_ends_the_same(tmp_path, monkeypatch):
    """The default rater (direct scoring by the warmed-up proxy) is its warm-up: a killed one continues."""
    from rater_toys import ToyProxy
    from test_rater_objectives import toy_set

    from lightning_alchemist.rater import warmup as warmup_mod
    from lightning_alchemist.rater.warmup import WarmupConfig, warm_up_proxy

    def proxy() -> ToyProxy:  # the same initial weights (part of the warm-up's fingerprint), as a seeded run builds
        torch.manual_seed(0)
        return ToyProxy()

    val = toy_set()
    cfg = WarmupConfig(steps=30, lr=1e-2, batch_size=8, eval_every=10, patience=0, checkpoint_every=7, caption_drop=0.2)
    full = proxy()
    done = warm_up_proxy(full, val, cfg, "toyval", cache_dir=tmp_path / "full")
    original = ToyProxy.per_sample_loss
    calls = {"n": 0}

    def killed_at_step_17(self, *args, **kwargs):
        if self.training:  # held-out evaluations run in eval mode
            calls["n"] += 1
            if calls["n"] == 17:
                raise Interrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ToyProxy, "per_sample_loss", killed_at_step_17)
    with pytest.raises(Interrupt):
        warm_up_proxy(proxy(), val, cfg, "toyval", cache_dir=tmp_path / "cut")
    monkeypatch.setattr(ToyProxy, "per_sample_loss", original)
    [partial] = (tmp_path / "cut").glob("*.partial.pt")
    assert torch.load(partial, weights_only=False)["step"] == 14  # the last state saved, every 7 steps
    resumed = proxy()
    again = warm_up_proxy(resumed, val, cfg, "toyval", cache_dir=tmp_path / "cut")
    assert not partial.exists() and (again.best_step, again.history) == (done.best_step, done.history)
    assert same(full.state_dict(), resumed.state_dict())
    assert warmup_mod._fingerprint(full, "x", cfg, "val") == warmup_mod._fingerprint(
        full, "x", WarmupConfig(**{**cfg.__dict__, "checkpoint_every": 0}), "val")
