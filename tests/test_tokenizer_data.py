"""The STAR proxy's tiny VQ tokenizer fits the run's own pool (issue 14): never ``shapes`` unless the data is shapes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import webdataset as wds
from omegaconf import OmegaConf
from PIL import Image

from lightning_alchemist.cli import CONF_DIR
from lightning_alchemist.config import GlyphsConfig
from lightning_alchemist.data.glyphs import ensure_glyphs
from lightning_alchemist.proxy.factory import build_proxy, fit_to_data, model_config
from lightning_alchemist.proxy.star import train_vq
from lightning_alchemist.proxy.star.train_vq import tokenizer_cache_path

TINY_VQ = {"train_steps": 3, "train_batch_size": 8, "train_samples": 48}


def _star_tiny() -> dict:
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "star_tiny.yaml"), resolve=True)
    node["tokenizer"].update(TINY_VQ)
    return node


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Tiny user shards (made by the glyphs generator, read back as plain ``data=wds``)."""
    art = ensure_glyphs(GlyphsConfig(num_pool=60, num_val=20, shard_size=30, resolution=32),
                        cache_dir=str(tmp_path_factory.mktemp("user_data")))
    return {"name": "wds", "urls": art.pool_urls, "val_urls": art.val_urls, "image_size": 32, "batch_size": 8, "num_workers": 0}


@pytest.fixture
def no_shapes(monkeypatch):
    """Any attempt to generate or read ``shapes`` fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the shapes dataset was generated or read")

    import lightning_alchemist.data.shapes as shapes
    import lightning_alchemist.data.sources as sources

    monkeypatch.setattr(shapes, "ensure_shapes", refuse)
    monkeypatch.setattr(sources, "ensure_shapes", refuse)
    monkeypatch.setattr(train_vq, "shapes_images", refuse)


@pytest.fixture
def trained(monkeypatch):
    """Spy on tokenizer training: the images each training run got."""
    calls: list[torch.Tensor] = []
    real = train_vq.train_tokenizer

    def spy(cfg, images, *args, **kwargs):
        calls.append(images.clone())
        return real(cfg, images, *args, **kwargs)

    monkeypatch.setattr(train_vq, "train_tokenizer", spy)
    return calls


def _shard_images(urls: list[str]) -> torch.Tensor:
    out = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        array = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"), dtype=np.float32)
        out.append(torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def test_wds_proxy_fits_its_tokenizer_on_the_given_shards_and_reuses_the_cache(cache_dir, shards, no_shapes, trained):
    node = fit_to_data(_star_tiny(), shards)
    assert node["tokenizer"]["train_data"] == shards
    path = tokenizer_cache_path(model_config(node).tokenizer)
    assert not path.exists()
    first = build_proxy(node)
    assert path.is_file() and len(trained) == 1
    images = trained[0]
    assert images.shape == (48, 3, 32, 32)  # train_samples of the pool's training split
    pool = _shard_images(shards["urls"])
    # every image the tokenizer trained on is one of the user's pool images (no validation, no shapes)
    nearest = (images[:, None] - pool[None]).abs().flatten(2).amax(-1).min(1).values
    assert nearest.max() < 1e-5
    second = build_proxy(fit_to_data(_star_tiny(), shards))
    assert len(trained) == 1  # cached: not retrained
    for (name, a), (_, b) in zip(first.tokenizer.state_dict().items(), second.tokenizer.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_cache_key_follows_the_data(cache_dir, shards, tmp_path):
    base = tokenizer_cache_path(model_config(_star_tiny()).tokenizer)
    on_wds = tokenizer_cache_path(model_config(fit_to_data(_star_tiny(), shards)).tokenizer)
    on_glyphs = tokenizer_cache_path(model_config(fit_to_data(_star_tiny(), {"name": "glyphs"})).tokenizer)
    assert len({base, on_wds, on_glyphs}) == 3
    # shapes (any shapes config) keeps the node and the cached shapes tokenizer's fingerprint
    for shapes in ({"name": "shapes"}, {"name": "shapes", "shapes": {"num_pool": 500}}):
        assert fit_to_data(_star_tiny(), shapes) == _star_tiny()
    assert base == tokenizer_cache_path(model_config(fit_to_data(_star_tiny(), {"name": "shapes"})).tokenizer)
    # other shards (same names, other content) are another tokenizer
    copy = tmp_path / "copy"
    copy.mkdir()
    urls = []
    for url in shards["urls"]:
        target = copy / url.rsplit("/", 1)[-1]
        target.write_bytes(open(url, "rb").read())
        urls.append(str(target))
    moved = tokenizer_cache_path(model_config(fit_to_data(_star_tiny(), {**shards, "urls": urls})).tokenizer)
    assert moved != on_wds


def test_fit_to_data_leaves_pretrained_tokenizers_and_other_families_alone(shards):
    pretrained = _star_tiny()
    pretrained["tokenizer"]["checkpoint"] = "/some/vae.pth"
    assert fit_to_data(pretrained, shards) is pretrained
    frozen_random = _star_tiny()
    frozen_random["tokenizer"]["auto_train"] = False
    assert fit_to_data(frozen_random, shards) is frozen_random
    flux = {"family": "flux"}
    assert fit_to_data(flux, shards) is flux
    user = {"class": "my.Proxy", "kwargs": {}}
    assert fit_to_data(user, shards) is user
    assert fit_to_data(_star_tiny(), None) == _star_tiny()


def test_a_pretrained_tokenizer_loads_from_a_path_with_data_wds(cache_dir, shards, no_shapes, trained, tmp_path):
    from lightning_alchemist.proxy.star.tokenizer import MultiScaleVQVAE

    cfg = model_config(_star_tiny()).tokenizer
    torch.manual_seed(3)
    weights = MultiScaleVQVAE(cfg).state_dict()
    path = tmp_path / "vae.pth"
    torch.save(weights, path)
    node = _star_tiny()
    node["tokenizer"]["checkpoint"] = str(path)
    proxy = build_proxy(fit_to_data(node, shards))
    assert not trained
    for name, value in proxy.tokenizer.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_rater_recipe_builds_its_proxy_on_the_run_data(cache_dir, shards, no_shapes, trained, tmp_path):
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.rater.recipe import run_train_rater

    cfg = check_overrides("config", [f"out={tmp_path}", "rater.proxy=null", "rater.epochs=1", "rater.steps_per_epoch=1",
                                     "rater.network.depth=1", "rater.network.width=32", "rater.network.heads=2", "rater.probe_size=8"])
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with({"data": shards, "model": _star_tiny(), "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}})
    ckpt = run_train_rater(cfg)
    spec = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["proxy_spec"]
    assert spec["model"]["tokenizer"]["train_data"]["urls"] == shards["urls"]  # scoring rebuilds the same tokenizer
    assert tokenizer_cache_path(model_config(spec["model"]).tokenizer).is_file()  # fitted on the shards (this test or an earlier one)
    assert all(images.shape[-1] == 32 for images in trained)


def test_target_stage_builds_its_model_on_the_run_data(cache_dir, shards, no_shapes, trained, tmp_path):
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.pipeline.target import train_target

    cfg = check_overrides("config", ["trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
                                     "trainer.enable_progress_bar=false", f"out={tmp_path}"])
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with({"data": shards, "model": _star_tiny()})
    result = train_target(cfg, tmp_path)
    assert result.steps == 1
    model = result.module.hparams["model"]  # what a checkpoint restores the model (and its tokenizer) from
    assert model["tokenizer"]["train_data"]["urls"] == shards["urls"]
    assert tokenizer_cache_path(model_config(model).tokenizer).is_file()


@pytest.mark.parametrize("steps", [19, 20, 21])
def test_tokenizer_trains_at_any_short_step_count(steps):
    from lightning_alchemist.proxy.star.tokenizer import VQConfig

    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, stats = train_vq.train_tokenizer(VQConfig(train_steps=steps, train_batch_size=8), images, progress=False)
    assert stats["steps"] == steps and stats["eval_rec_mse"] > 0
