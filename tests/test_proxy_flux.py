"""FLUX proxy (diffusers): flow-matching per-sample losses with explicit draws, timesteps modes, sampling."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.factory import build_proxy
from lightning_alchemist.proxy.flux import FluxProxy, latent_image_ids, pack_latents, unpack_latents
from proxy_batches import make_batch


def rows(d: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in d.items()}


@pytest.fixture(scope="module")
def proxy() -> FluxProxy:
    return build_proxy({"family": "flux"}).eval()


def test_packing_round_trip_and_ids():
    z = torch.randn(2, 16, 8, 6)
    x = pack_latents(z)
    assert x.shape == (2, 12, 64)
    assert torch.equal(unpack_latents(x, 8, 6), z)
    ids = latent_image_ids(8, 6)
    assert ids.shape == (12, 3) and ids[:, 0].abs().sum() == 0 and ids[-1].tolist() == [0, 3, 2]


def test_encode_and_rater_inputs(proxy):
    enc = proxy.encode(make_batch())
    assert enc["latents"].shape == (4, 16, 16, 16) and enc["latent_std"].shape == (4, 16, 16, 16)
    ri = proxy.rater_inputs(enc)
    assert ri.tokens.shape == (4, 64, 64) and ri.text.shape == (4, 32, 32) and ri.pooled_text.shape == (4, 32)
    assert ri.levels is None


def test_batched_equals_single_with_the_same_draws(proxy):
    enc = proxy.encode(make_batch(5))
    draws = proxy.sample_draws(enc, torch.Generator().manual_seed(0))
    batched = proxy.per_sample_loss(enc, draws=draws)
    assert batched.shape == (5,)
    single = torch.cat([proxy.per_sample_loss(rows({k: v for k, v in enc.items() if k != "key"}, i), draws=rows(draws, i))
                        for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_generator_fixes_the_draws(proxy):
    enc = proxy.encode(make_batch())
    a = proxy.per_sample_loss(enc, torch.Generator().manual_seed(1))
    b = proxy.per_sample_loss(enc, torch.Generator().manual_seed(1))
    c = proxy.per_sample_loss(enc, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_loss_does_not_depend_on_other_samples_caption(proxy):
    enc = proxy.encode(make_batch())
    draws = proxy.sample_draws(enc, torch.Generator().manual_seed(0))
    base = proxy.per_sample_loss(enc, draws=draws)
    other = dict(enc)
    ts = proxy.text_encoder.encode(["a large yellow diamond at the top on a purple background"])
    other["text"], other["pooled"] = enc["text"].clone(), enc["pooled"].clone()
    other["text"][0], other["pooled"][0] = ts.hidden[0], ts.pooled[0]
    changed = proxy.per_sample_loss(other, draws=draws)
    assert not torch.isclose(changed[0], base[0])
    torch.testing.assert_close(changed[1:], base[1:])


def test_objective_matches_the_diffusers_recipe(proxy):
    """x_t = (1-σ)z + σε, velocity target ε - z, uniform weighting: the loss is the per-sample MSE."""
    enc = proxy.encode(make_batch(2))
    draws = proxy.sample_draws(enc, torch.Generator().manual_seed(0))
    z = enc["latents"] + enc["latent_std"] * draws["posterior"]
    idx = (draws["u"] * 1000).long()
    sigma = proxy.scheduler.sigmas[idx].view(-1, 1, 1, 1)
    x_t = (1 - sigma) * z + sigma * draws["noise"]
    pred = proxy.transformer(hidden_states=pack_latents(x_t), timestep=proxy.scheduler.timesteps[idx] / 1000,
                             guidance=torch.full((2,), 3.5), pooled_projections=enc["pooled"], encoder_hidden_states=enc["text"],
                             txt_ids=torch.zeros(32, 3), img_ids=latent_image_ids(16, 16), return_dict=False)[0]
    expected = ((unpack_latents(pred, 16, 16) - (draws["noise"] - z)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(proxy.per_sample_loss(enc, draws=draws), expected, rtol=1e-5, atol=1e-6)


def test_fixed_and_stratified_timesteps():
    fixed = build_proxy({"family": "flux", "timesteps": "fixed", "fixed_t": 0.25})
    enc = fixed.encode(make_batch(8))
    assert torch.allclose(fixed.sample_draws(enc, torch.Generator().manual_seed(0))["u"], torch.full((8,), 0.25))
    strat = build_proxy({"family": "flux", "timesteps": "stratified"})
    u = strat.sample_draws(enc, torch.Generator().manual_seed(0))["u"]
    assert sorted((u * 8).floor().long().tolist()) == list(range(8))  # one draw per stratum


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "sigma_sqrt", "cosmap"])
def test_weighting_schemes_run(scheme):
    p = build_proxy({"family": "flux", "weighting_scheme": scheme}).eval()
    loss = p.per_sample_loss(p.encode(make_batch(2)), torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all()


def test_generate_returns_images_of_the_right_size(proxy):
    imgs = proxy.generate(["a photo", "a small red circle"], generator=torch.Generator().manual_seed(0), num_inference_steps=3)
    assert imgs.shape == (2, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    cfg = proxy.generate(["a photo"], generator=torch.Generator().manual_seed(0), num_inference_steps=2, cfg_scale=3.0)
    assert cfg.shape == (1, 3, 32, 32)


def test_missing_local_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=f"folder {tmp_path / 'nope'} not found") as err:
        build_proxy({"family": "flux", "path": str(tmp_path / "nope")})
    assert "\n" not in str(err.value)


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="model.timesteps"):
        build_proxy({"family": "flux", "timesteps": "sometimes"})
    with pytest.raises(ConfigError, match="model.weighting_scheme"):
        build_proxy({"family": "flux", "weighting_scheme": "nope"})


def test_loads_a_local_diffusers_folder(tmp_path, proxy):
    proxy.transformer.save_pretrained(tmp_path / "transformer")
    proxy.vae.save_pretrained(tmp_path / "vae")
    proxy.scheduler.save_pretrained(tmp_path / "scheduler")
    loaded = build_proxy({"family": "flux", "path": str(tmp_path), "seed": 99}).eval()
    enc = proxy.encode(make_batch(2))
    draws = proxy.sample_draws(enc, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.per_sample_loss(enc, draws=draws), proxy.per_sample_loss(enc, draws=draws))
