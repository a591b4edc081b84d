"""The model/finetune/trainer config groups compose, validate, and size the models as documented."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import lightning_alchemist.proxy as proxy_pkg
from helpers import compose
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.factory import model_config
from lightning_alchemist.proxy.lora import finetune_config
from lightning_alchemist.proxy.star.transformer import StarTransformer
from lightning_alchemist.target.trainer import total_steps, trainer_config


@pytest.mark.parametrize("name", ["star_tiny", "flux_tiny"])
def test_tiny_configs_compose_and_validate(name):
    cfg = compose("config", [f"model={name}", "finetune=lora", "trainer=cpu"])
    m = model_config(cfg.model)
    assert m.name == name and m.family == name.split("_")[0]
    assert finetune_config(cfg.finetune).mode == "lora"
    assert trainer_config(cfg.trainer).accelerator == "cpu"


@pytest.mark.parametrize("name,missing", [("star_40m", "tokenizer.checkpoint"), ("star_0.3b", "tokenizer.checkpoint"),
                                          ("star_0.9b", "tokenizer.checkpoint"), ("flux", "model.path")])
def test_real_model_configs_name_the_missing_local_path(name, missing):
    cfg = compose("config", [f"model={name}"])
    with pytest.raises(ConfigError, match=missing.replace(".", r"\.")) as err:
        model_config(cfg.model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name,depth,params_m", [("star_40m", 8, 41.0), ("star_0.3b", 16, 274.9), ("star_0.9b", 24, 878.1)])
def test_star_sizes_match_the_official_table(name, depth, params_m, tmp_path):
    cfg = compose("config", [f"model={name}", f"model.tokenizer.checkpoint={tmp_path}/vae.pth", f"model.text.path={tmp_path}"])
    m = model_config(cfg.model)
    assert m.transformer.depth == depth
    with torch.device("meta"):
        var = StarTransformer(m.transformer, m.tokenizer.vocab_size, m.tokenizer.z_channels, 1024, 1024, m.tokenizer.patch_nums)
    assert var.C == 64 * depth and var.H == depth
    assert sum(p.numel() for p in var.parameters()) / 1e6 == pytest.approx(params_m, abs=0.1)


def test_trainer_length_in_samples_and_bad_values():
    assert total_steps(trainer_config({"max_samples": 1000}), batch_size=32) == 32
    assert total_steps(trainer_config({"max_steps": 7}), batch_size=32) == 7
    with pytest.raises(ConfigError, match="trainer"):
        trainer_config({"max_stpes": 3})
    with pytest.raises(ConfigError, match="finetune.schedule"):
        finetune_config({"schedule": "exp"})


def test_package_exports_are_lazy_and_complete():
    for name in proxy_pkg.__all__:
        assert getattr(proxy_pkg, name) is not None
    with pytest.raises(AttributeError):
        proxy_pkg.DoesNotExist  # noqa: B018


def _train_recipe():
    from helpers import load_recipe

    return load_recipe("train")


@pytest.mark.parametrize("overrides,match", [(["model=flux"], "model.path"), (["model=star_tiny", "data.image_size=64"], "data.image_size=32"),
                                             (["finetune=lora", "finetune.rank=0"], "finetune.rank")])
def test_train_recipe_fails_fast_with_one_line(overrides, match):
    cfg = compose("config", overrides)
    with pytest.raises(ConfigError, match=match) as err:
        _train_recipe().train(cfg)
    assert "\n" not in str(err.value)
