"""evaluate_model on a tiny untrained star_tiny: every metric key, a grid PNG, fixed prompts, validated config."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import CONF_DIR, compose
from lightning_alchemist.config import as_container
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.metrics.evaluate import METRIC_KEYS, EvalConfig, eval_config, evaluate_model, prompt_set

# 64-px renders like the default data (shares the judge's renderer settings); few samples.
EVAL_SHAPES = {"num_pool": 200, "num_val": 100, "shard_size": 100, "resolution": 64, "seed": 0}
# The default judge (32 px read, 64 px renders): trained once per test session, shared with test_metrics_judge.py
# (a cheaper judge is useless: 120 steps give 27 % exact, so nothing here could be checked with it). 32 prompts:
# at 12, the FID of an untrained model's noise and of the clean renders were within sample noise (47k vs 48k on one CPU).
SMALL_EVAL = {"num_prompts": 32, "fid_real": 64, "val_batches": 2, "batch_size": 8, "grid_images": 8, "grid_columns": 4}


@pytest.fixture(scope="module")
def eval_data(cache_dir):
    from lightning_alchemist.data.datamodule import build_datamodule

    dm = build_datamodule({"name": "shapes", "image_size": 32, "batch_size": 16, "cache_dir": cache_dir, "shapes": EVAL_SHAPES})
    dm.prepare_data()
    dm.setup("validate")
    return dm


def star_tiny_untrained() -> dict:
    """conf/model/star_tiny with a seeded random tokenizer (no tokenizer training in tests)."""
    model = as_container(compose("config", []).model)
    model["tokenizer"]["auto_train"] = False
    return model


@pytest.fixture(scope="module")
def target():
    from lightning_alchemist.target.module import T2IModule

    return T2IModule(star_tiny_untrained(), {"mode": "full"}, seed=0)


def test_evaluate_model_returns_every_metric_and_writes_the_grid(target, eval_data, tmp_path):
    result = evaluate_model(target, eval_data, SMALL_EVAL, tmp_path)
    assert set(METRIC_KEYS) <= set(result)
    json.dumps(result)
    assert result["num_prompts"] == 32 and result["val_samples"] == 32
    assert result["val_loss"] > 0 and torch.isfinite(torch.tensor(result["val_loss"]))
    # An untrained model draws noise: the judge rejects it, and accepts the prompts' own clean renders.
    assert result["alignment"] <= 0.1 and result["alignment_reference"] >= 0.9
    assert result["judge"]["heldout_exact"] >= 0.95
    assert set(result["alignment_breakdown"]) == {"position", "shape", "color", "size", "background"}
    assert result["fid_judge"] > result["fid_judge_reference"] >= 0.0
    # Through star_tiny's (here random) tokenizer: a value, and no better than the clean renders.
    assert 0.0 <= result["alignment_ceiling"] <= result["alignment_reference"]
    assert result["fid_judge_ceiling"] > result["fid_judge_reference"]
    assert result["fid_inception"] is None and result["clip_score"] is None
    assert set(result["skipped"]) == {"fid_inception", "clip_score"} and all("\n" not in v for v in result["skipped"].values())
    png = tmp_path / "generated.png"
    assert result["generated_png"] == str(png)
    with Image.open(png) as im:
        # 8 images in 4 columns, 2 rows, with captions; each beside its prompt's clean render (shapes has scenes)
        assert im.size[0] > 4 * 2 * 128 and im.size[1] > 2 * 128


def test_val_loss_equals_lightnings_validation(target, eval_data):
    import lightning as L

    from lightning_alchemist.metrics.evaluate import heldout_loss

    ours, n = heldout_loss(target, eval_data, max_batches=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2)
    theirs = trainer.validate(target, datamodule=eval_data, verbose=False)[0]["val/loss"]
    assert n == 32 and ours == pytest.approx(theirs, rel=1e-5)


def test_prompts_are_fixed_by_the_eval_seed(eval_data):
    cfg = EvalConfig(num_prompts=6)
    prompts, scenes = prompt_set(eval_data.cfg, cfg)
    again, _ = prompt_set(eval_data.cfg, EvalConfig(num_prompts=10))
    assert again[:6] == prompts and len(set(prompts)) == 6 and len(scenes) == 6
    other, _ = prompt_set(eval_data.cfg, EvalConfig(num_prompts=6, seed=1))
    assert other != prompts


def test_eval_config_is_validated():
    assert eval_config(compose("config", []).eval) == EvalConfig()  # the default option keeps the schema's defaults
    for bad, needle in (({"num_promts": 3}, "eval.num_promts"), ({"fid_features": ["inceptoin"]}, "eval.fid_features"),
                        ({"align_on": ["colour"]}, "eval.align_on"), ({"num_prompts": 1}, "eval"),
                        ({"val_batches": 0}, "eval.val_batches")):
        with pytest.raises(ConfigError) as err:
            eval_config(bad)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_other_data_uses_heldout_captions_and_skips_the_judge(target, eval_data, tmp_path):
    """Webdataset shards that are not ``shapes``: prompts are held-out captions; judge metrics are skipped in one line."""
    from lightning_alchemist.data.datamodule import build_datamodule

    src = eval_data.source
    dm = build_datamodule({"name": "wds", "urls": src.pool_urls, "val_urls": src.val_urls, "image_size": 32, "batch_size": 16})
    dm.setup("validate")
    result = evaluate_model(target, dm, {**SMALL_EVAL, "num_prompts": 4, "grid_images": 4}, tmp_path)
    assert result["num_prompts"] == 4 and result["val_loss"] > 0
    assert result["alignment"] is None and result["fid_judge"] is None and result["judge"] is None
    assert {"alignment", "fid_judge", "fid_inception", "clip_score"} == set(result["skipped"])
    prompts, scenes = prompt_set(dm.cfg, EvalConfig(num_prompts=4), dm.val)
    assert scenes is None and prompts == [dm.val[i]["caption"] for i in range(4)]
    assert (tmp_path / "generated.png").is_file()


def test_autoencoder_roundtrip_for_both_families(target):
    from lightning_alchemist.metrics.evaluate import autoencoder_roundtrip
    from lightning_alchemist.proxy.factory import build_proxy

    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for module in (target, build_proxy({"family": "flux"}, {"mode": "full"})):
        y = autoencoder_roundtrip(module, x, batch_size=2)
        assert y.shape == x.shape and y.abs().max() <= 1.0 and not torch.equal(y, x)
    assert autoencoder_roundtrip(torch.nn.Linear(2, 2), x) is None


def test_metrics_package_exports_resolve():
    import types

    import lightning_alchemist.metrics as metrics

    for name in metrics.__all__:
        assert not isinstance(getattr(metrics, name), types.ModuleType), name


def test_sample_grid_shows_each_prompts_reference_beside_the_generated_image():
    from lightning_alchemist.metrics.evaluate import sample_grid

    drawn = torch.full((3, 3, 32, 32), -1.0)  # black
    asked = torch.full((3, 3, 32, 32), 1.0)   # white
    plain = sample_grid(drawn, ["a", "b", "c"], columns=3, cell=64)
    paired = sample_grid(drawn, ["a", "b", "c"], columns=3, cell=64, references=asked)
    assert paired.size[0] > plain.size[0] + 3 * 64  # every cell holds two images
    first = paired.crop((6, 6, 6 + 64, 6 + 64)).convert("L")
    second = paired.crop((6 + 66, 6, 6 + 130, 6 + 64)).convert("L")
    assert min(first.getdata()) > 240 and max(second.getdata()) < 15  # the reference left, the generated image right
    with pytest.raises(ValueError, match="one per image"):
        sample_grid(drawn, ["a", "b", "c"], references=asked[:2])
