"""The train_rater and score stages end to end on a tiny ``shapes`` (toy proxy), and the AUC evaluation."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose, set_group
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.rater.auc import auc, defect_aucs
from lightning_alchemist.rater.recipe import rater_path_override, run_score, run_train_rater

TOY = {"class": "rater_toys.ToyProxy", "kwargs": {"image_size": 32, "patch": 8}}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


def compose_with(name: str, overrides: list[str], **nodes) -> OmegaConf:
    cfg = compose(name, overrides)
    for key, node in nodes.items():  # replaced whole (a user's proxy is not a StarConfig)
        set_group(cfg, key, node)
    return cfg


def test_train_rater_then_score_on_tiny_shapes(tmp_path, small_shapes, small_shapes_cfg):
    out = tmp_path / "run"
    cfg = compose_with(
        "config",
        [f"out={out}", "rater.proxy=null", "rater.epochs=2", "rater.network.depth=1", "rater.network.width=32",
         "rater.network.heads=2", "rater.probe_size=32", "rater.steps_per_epoch=3",
         "rater.score_with=rater", "rater.objective=official", "rater.warmup.steps=0"],  # the amortised official rater
        data=small_shapes_cfg, model=TOY, trainer=TRAINER,
    )
    ckpt = run_train_rater(cfg)
    assert ckpt == out / "rater.ckpt" and ckpt.is_file()
    # 100 val samples at batch 16 = 6 batches per epoch, cut to steps_per_epoch=3: 2 x 3 steps, each
    # stepping two optimisers (proxy and rater) -> global_step 12 (24 without the cut)
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2 * 2 * 3
    rows = list(csv.DictReader(open(next((out / "rater_logs").rglob("metrics.csv")))))
    alphas = sorted({round(float(r["train/alpha_epoch"]), 6) for r in rows if r.get("train/alpha_epoch")})
    assert alphas == [0.97, 1.0]
    # the last keep_checkpoints=2 epochs and last.ckpt
    assert sorted(p.name for p in (out / "rater_checkpoints").glob("*.ckpt")) == ["epoch00.ckpt", "epoch01.ckpt", "last.ckpt"]

    score_cfg = compose_with("score", rater_path_override([f"rater={ckpt}", f"out={out}"]), data=small_shapes_cfg, trainer=TRAINER)
    info = run_score(score_cfg)
    files = sorted((out / "ratings").glob("*.parquet"))
    assert [f.stem for f in files] == [s.stem for s in small_shapes.pool_shards()]
    from lightning_alchemist.selection.ratings import Ratings

    ratings = Ratings.read(out / "ratings", expected_keys=list(small_shapes.pool.keys))
    assert len(ratings) == len(small_shapes.pool) == info["rows"]
    assert np.isfinite(ratings.ratings).all() and ratings.ratings.std() > 0
    # the rerun finds everything done
    again = run_score(compose_with("score", rater_path_override([f"rater={ckpt}", f"out={out}"]), data=small_shapes_cfg, trainer=TRAINER))
    assert again["rows"] == 0 and len(again["skipped_shards"]) == len(files)


def test_default_rater_warms_up_then_scores_directly(tmp_path, small_shapes, small_shapes_cfg):
    """The default stage: warm-up on the validation split (cached), a direct-scoring rater.ckpt, then
    the unchanged score stage writes the contrast signal with its declared ranking ends."""
    from lightning_alchemist.rater.direct import ProxyScorer
    from lightning_alchemist.rater.scoring import load_rater
    from lightning_alchemist.selection.ratings import Ratings

    out = tmp_path / "direct"
    cfg = compose_with("config", [f"out={out}", "rater.proxy=null", "rater.warmup.steps=6", "rater.warmup.eval_every=3",
                             "rater.warmup.batch_size=8", "rater.contrast_partners=2"],
                  data=small_shapes_cfg, model=TOY, trainer=TRAINER)
    ckpt = run_train_rater(cfg)
    scorer = load_rater(ckpt)
    assert isinstance(scorer, ProxyScorer) and scorer.cfg.objective == "contrast"
    assert scorer.info["warmup"]["steps_run"] == 6
    # encode once: the recipe's encode stage wrote the feature cache and the warm-up read its split from it
    assert scorer.info["encodes_val"].get("features") and list((out / "cache" / "features").glob("*/stage.json"))
    # the image checks' references of the validation split, which the scorer's penalties read
    assert set(scorer.checks) == {"detail", "noise", "empty"}
    assert all(ref.n == len(small_shapes.val) and ref.spread > 0 for ref, _, _ in scorer.checks.values())
    # the warm-up curve (held-out loss at steps 3 and 6) where the report reads rater curves
    rows = list(csv.DictReader(open(out / "rater_logs" / "version_0" / "metrics.csv")))
    assert [r["step"] for r in rows] == ["3", "6"] and all(float(r["warmup/holdout_loss"]) > 0 for r in rows)
    assert run_train_rater(cfg) == ckpt and load_rater(ckpt).info["warmup"]["cached"]  # the second run trains nothing
    info = run_score(compose_with("score", rater_path_override([f"rater={ckpt}", f"out={out}"]), data=small_shapes_cfg, trainer=TRAINER))
    ratings = Ratings.read(out / "ratings", expected_keys=list(small_shapes.pool.keys))
    assert info["rows"] == len(small_shapes.pool) and np.isfinite(ratings.ratings).all()
    # the score recipe finds the feature cache train_rater wrote and reads its encodes; the default scorer's image
    # checks measure the decoded images, which its batches carry beside them
    assert scorer.needs_images and info["features"]
    assert ratings.ranking["objective"] == "contrast" and ratings.ranking["head"] == "clean"


def test_limited_prediction_writes_only_complete_shards(tmp_path, small_shapes_cfg, small_shapes):
    from lightning_alchemist.data.datamodule import T2IDataModule
    from lightning_alchemist.rater.module import RaterModule
    from lightning_alchemist.rater.scoring import score

    from rater_toys import ToyProxy

    rater = RaterModule(ToyProxy(image_size=32, patch=8), 192, 16, {"network": {"depth": 1, "width": 32, "heads": 2}})
    per_shard = small_shapes.pool_shards()[0].num_samples
    batches = (per_shard + per_shard // 2) // small_shapes_cfg["batch_size"]  # one and a half shards
    info = score(rater, T2IDataModule(small_shapes_cfg), tmp_path, trainer_kwargs={**TRAINER, "limit_predict_batches": batches})
    assert len(info["written_shards"]) == 1
    assert pq.read_table(next(tmp_path.glob("*.parquet"))).num_rows == per_shard


def test_rater_path_override_and_proxy_config_errors():
    assert rater_path_override(["rater=/x/rater.ckpt", "out=y", "rater.network.depth=1"]) == [
        "rater_ckpt=/x/rater.ckpt", "out=y", "rater.network.depth=1"]
    with pytest.raises(ConfigError, match="does_not_exist") as err:
        compose("config", ["rater.proxy=does_not_exist"])
    assert "\n" not in str(err.value)
    cfg = compose("config", ["rater.proxy=flux_tiny", "rater.proxy.seed=3"])  # a conf/model entry, composed and typed
    assert cfg.rater.proxy.family == "flux" and cfg.rater.proxy.seed == 3 and cfg.model.family == "star"
    with pytest.raises(ConfigError, match="rater.proxy.seed"):
        compose("config", ["rater.proxy.seed=abc"])


def test_auc_and_defect_aucs():
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count one half
    res = defect_aucs({"a": 3.0, "b": 2.0, "c": 1.0, "d": 4.0}, {"a": "clean", "b": "clean", "c": "chaotic", "d": "plain"})
    assert res["chaotic"] == {"auc": 1.0, "n": 1} and res["plain"] == {"auc": 0.0, "n": 1}


def test_multi_process_runs_get_a_find_unused_ddp_strategy():
    from lightning_alchemist.rater.recipe import _multi_process

    assert _multi_process({"devices": 2}) and _multi_process({"devices": 1, "num_nodes": 2}) and _multi_process({"devices": [0, 1]})
    assert not _multi_process({"devices": 1}) and not _multi_process({"devices": "auto"})


def test_rater_presets_compose_and_validate():
    from lightning_alchemist.rater.config import rater_config

    default = rater_config(compose("config", []).rater)
    assert default.meta_gradient == "first_order" and default.proxy.name == "star_tiny" and default.entropy_weight == 1.0
    assert default.proxy_optim.lr == 2e-3 and default.rater_optim.lr == 1e-3 and list(default.proxy_optim.betas) == [0.9, 0.95]
    assert default.rater_optim.warmup_epochs == 4.0 and default.steps_per_epoch == 20 and default.epochs == 10
    tiny = rater_config(compose("config", ["rater=tiny"]).rater)
    assert tiny.steps_per_epoch is None and tiny.proxy_optim.lr == 2e-3  # full epochs, the rest stays the default
    official = rater_config(compose("config", ["rater=official"]).rater)
    assert official.proxy_optim.lr == official.rater_optim.lr == 1e-4 and official.entropy_weight == 0.0
    assert official.rater_optim.warmup_epochs == official.proxy_optim.warmup_epochs == 0.2 and official.steps_per_epoch is None
    assert official.proxy_optim.weight_decay == 0.05 and official.alpha_decay == 0.03  # the rest stays the default
