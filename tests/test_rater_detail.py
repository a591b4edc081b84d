"""Model-free image checks (native detail, noise, near-empty): the measures, references and penalties, and the
direct scorer applying them."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.rater.config import IMAGE_CHECKS, rater_config
from lightning_alchemist.rater.detail import (
    CHECKS,
    DetailReference,
    detail_penalty,
    detail_reference,
    detail_share,
    image_references,
    log_contrast,
    log_detail,
    noise_level,
    robust_penalty,
)
from lightning_alchemist.pipeline.cache import fingerprint
from lightning_alchemist.rater.direct import ProxyScorer
from lightning_alchemist.rater.recipe import image_check_versions
from lightning_alchemist.rater.scoring import score
from lightning_alchemist.selection.ratings import Ratings

from rater_toys import ToyProxy, ToyScoreData, collate, make_samples


def _scenes(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Sharp-edged random rectangles on a flat background, ``[n, 3, size, size]`` in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((n, 3, size, size), -0.5)
    for i in range(n):
        for _ in range(3):
            y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
            h, w = torch.randint(3, 9, (2,), generator=g).tolist()
            img[i, :, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return img


def _blur(img: torch.Tensor, radius: int = 2) -> torch.Tensor:
    k = torch.exp(-torch.arange(-2 * radius, 2 * radius + 1).float() ** 2 / (2 * radius**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.pad(img, (2 * radius,) * 4, mode="replicate")
    x = F.conv2d(x, k, groups=3)
    return F.conv2d(x, k.transpose(-1, -2), groups=3)


def _downscale(img: torch.Tensor, factor: int = 8) -> torch.Tensor:
    small = F.interpolate(img, scale_factor=1 / factor, mode="bilinear", antialias=True)
    return F.interpolate(small, scale_factor=factor, mode="nearest")


def test_detail_share_separates_blurred_and_upscaled_images():
    sharp = _scenes()
    d_sharp, d_blur, d_down = detail_share(sharp), detail_share(_blur(sharp)), detail_share(_downscale(sharp))
    assert d_sharp.shape == (16,) and ((d_sharp >= 0) & (d_sharp <= 1)).all()
    assert (d_blur < d_sharp).all() and (d_down < d_sharp).all()
    assert d_blur.max() < d_sharp.min() and d_down.max() < d_sharp.min()
    # scale-free: contrast and brightness do not change it; flat images have none; noise has most
    assert torch.allclose(detail_share(sharp * 0.3 + 0.2), d_sharp, atol=1e-5)
    assert detail_share(torch.zeros(2, 3, 8, 8)).eq(0).all()
    noise = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert detail_share(noise).min() > d_sharp.max()
    assert torch.allclose(log_detail(sharp), d_sharp.log10())
    with pytest.raises(ValueError, match="at least 2x2"):
        detail_share(torch.zeros(1, 3, 1, 1))


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("shift", [0, 1])
def test_detail_share_is_zero_for_pixel_replicated_upscales(factor, shift):
    # 64 px images upscaled by pixel replication from a random smaller one: sharp block edges, which a smooth
    # reconstruction reads as detail (version 1 of the check let most 8x ones through), but no detail of their own;
    # on either 2x2 pixel grid (shift: the blocks start one pixel in)
    small = torch.rand(8, 3, 64 // factor, 64 // factor, generator=torch.Generator().manual_seed(factor)) * 2 - 1
    blocky = F.interpolate(small, scale_factor=factor, mode="nearest")
    if shift:
        blocky = torch.cat([blocky[..., :1, :], blocky[..., :-1, :]], dim=-2)
        blocky = torch.cat([blocky[..., :1], blocky[..., :-1]], dim=-1)
    sharp = _scenes(8, size=64)
    assert detail_share(blocky).max() < 1e-3 < detail_share(sharp).min()
    refs = image_references([sharp])
    assert refs["detail"].version == CHECKS["detail"].version == 2
    assert detail_penalty(log_detail(blocky), refs["detail"], 2.0, 1.0).min() > 1.0


def test_reference_and_penalty():
    ref = detail_reference([_scenes(seed=0), _scenes(seed=1)])
    assert ref.n == 32 and ref.spread > 0
    assert DetailReference.from_dict(ref.as_dict()) == ref and DetailReference.from_dict(None) is None
    logd = torch.tensor([ref.median + 1.0, ref.median, ref.median - 2.0 * ref.spread, ref.median - 3.0 * ref.spread])
    pen = detail_penalty(logd, ref, threshold=2.0, weight=4.0)
    # nothing at or above the threshold (the sharp side is never penalised); linear below it
    assert pen[:3].abs().max() < 1e-5 and pen[3] == pytest.approx(4.0, rel=1e-4)
    # identical images: the spread is floored, the z stays finite
    flat_ref = detail_reference([_scenes(4, seed=3)[:1].repeat(8, 1, 1, 1)])
    assert flat_ref.spread == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no images"):
        detail_reference([])


def test_config_checks_detail_fields():
    cfg = rater_config(None)
    assert cfg.detail_weight > 0 and cfg.detail_threshold > 0  # on by default
    with pytest.raises(ConfigError, match="detail_weight"):
        rater_config({"detail_weight": -1.0})
    # what names a trained direct scorer: the version of each check it applies, none for a rater network
    assert image_check_versions(cfg) == {name: check.version for name, check in CHECKS.items()}
    assert image_check_versions(rater_config({"noise_weight": 0.0})) == {"detail": 2, "empty": 1}
    assert image_check_versions(rater_config({"score_with": "rater"})) == {}


def test_rater_stage_is_named_by_the_checks_versions(monkeypatch, tmp_path):
    # a changed statistic (version bump) must train the scorer again: its references are measured in that stage
    from lightning_alchemist.pipeline import run

    keys: list = []
    monkeypatch.setattr(run, "cached_stage", lambda root, stage, key, build: keys.append(fingerprint(key)))
    v = SimpleNamespace(rater=rater_config(None), data=SimpleNamespace(batch_size=8), rater_proxy={"kind": "toy"},
                        seed=0)
    run.rater_stage(v, None, tmp_path, {"data": "d"})
    monkeypatch.setitem(CHECKS, "detail", dataclasses.replace(CHECKS["detail"], version=CHECKS["detail"].version + 1))
    run.rater_stage(v, None, tmp_path, {"data": "d"})
    assert keys[0] != keys[1]


def _toy_batch(n: int = 8):
    samples = make_samples(n, 0.0, 3, "d", image_size=8)
    batch = collate(samples)
    blurred = dict(batch, image=_downscale(batch["image"], 4), key=[k + "-low" for k in batch["key"]])
    return batch, blurred


def test_scorer_penalises_images_without_detail_and_records_the_reference(tmp_path):
    torch.manual_seed(0)
    proxy = ToyProxy()
    batch, low = _toy_batch()
    ref = detail_reference([batch["image"]])
    on = ProxyScorer(proxy, {"objective": "contrast", "contrast_partners": 2}, info={"detail": ref.as_dict()})
    off = ProxyScorer(proxy, {"objective": "contrast", "contrast_partners": 2, "detail_weight": 0.0}, info={"detail": ref.as_dict()})
    none = ProxyScorer(proxy, {"objective": "contrast", "contrast_partners": 2})  # no reference: no penalty
    r_on, r_off, r_none = (s.predict_step(low, 0)["rating"] for s in (on, off, none))
    assert torch.allclose(r_off, r_none)
    expected = detail_penalty(log_detail(low["image"]), ref, on.cfg.detail_threshold, on.cfg.detail_weight)
    assert expected.min() > 0  # the upscaled images lie far below the reference
    assert torch.allclose(r_off - r_on, expected, atol=1e-4)
    # sharp images of the reference itself lose (almost) nothing
    assert torch.allclose(on.predict_step(batch, 0)["rating"], off.predict_step(batch, 0)["rating"], atol=1e-4)
    # the reference and weights are part of the scoring signature (a rating fingerprint changes with them)
    assert on.scoring_signature()["detail"] == ref.as_dict() and "detail" not in off.scoring_signature()
    # and survive the checkpoint
    path = on.save(tmp_path / "rater.ckpt")
    again = ProxyScorer.from_checkpoint(torch.load(path, weights_only=False), proxy=proxy)
    assert again.detail == on.detail
    dm = ToyScoreData(num_shards=1, per_shard=8, batch_size=8)
    score(on, dm, tmp_path / "ratings", trainer_kwargs={"enable_progress_bar": False})
    assert len(Ratings.read(tmp_path / "ratings")) == 8


def test_noise_level_reads_added_noise_in_grey_levels_and_ignores_edges():
    sharp = _scenes(32)
    g = torch.Generator().manual_seed(2)
    assert noise_level(sharp).max() < 0.5  # flat regions and sharp edges: no noise
    for sigma in (5.0, 20.0):
        noisy = (sharp + torch.randn(sharp.shape, generator=g) * sigma / 127.5).clamp(-1, 1)
        # grey = mean of 3 channels: the per-pixel sigma falls by sqrt(3); clipping lowers it a little more
        assert noise_level(noisy).median() == pytest.approx(sigma / 3**0.5, rel=0.3)
    pepper = sharp.clone()
    mask = torch.rand(32, 1, 32, 32, generator=g) < 0.3
    pepper[mask.expand_as(pepper)] = 1.0
    assert noise_level(pepper).min() > 5 * noise_level(sharp).max() + 5


def test_log_contrast_finds_near_empty_images():
    scenes = _scenes(16)
    plain = torch.full((16, 3, 32, 32), 0.2) + torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 / 127.5
    assert log_contrast(scenes).min() > 0.9 and log_contrast(plain).max() < 0.5
    assert log_contrast(torch.zeros(1, 3, 8, 8)).item() == pytest.approx(-2.0)  # floored


def test_image_references_and_penalties_by_side():
    refs = image_references([_scenes(seed=0), _scenes(seed=1)])
    assert set(refs) == set(CHECKS) == set(IMAGE_CHECKS) == {"detail", "noise", "empty"}
    assert refs["detail"] == detail_reference([_scenes(seed=0), _scenes(seed=1)])
    assert refs["noise"].spread == pytest.approx(1.0)  # clean renders: no noise, the one-grey-level floor
    ref = DetailReference(0.0, 1.0, 10)
    v = torch.tensor([-5.0, 0.0, 5.0])
    assert robust_penalty(v, ref, "low", 3.0, 2.0).tolist() == [4.0, 0.0, 0.0]
    assert robust_penalty(v, ref, "high", 3.0, 2.0).tolist() == [0.0, 0.0, 4.0]
    with pytest.raises(ValueError, match="side"):
        robust_penalty(v, ref, "both")
    with pytest.raises(ValueError, match="no images"):
        image_references([])


def test_scorer_applies_every_check_on_its_side(tmp_path, caplog):
    torch.manual_seed(0)
    proxy = ToyProxy()
    batch, _ = _toy_batch(16)
    # blocky clean images (4x4 random cells, nearest-upscaled): no pixel noise, clear contrast
    cells = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    batch = dict(batch, image=F.interpolate(cells, scale_factor=2, mode="nearest"))
    refs = image_references([batch["image"]])
    info = {"image_checks": {k: r.as_dict() for k, r in refs.items()}}
    cfg = {"objective": "contrast", "contrast_partners": 2}
    on = ProxyScorer(proxy, cfg, info=info)
    off = ProxyScorer(proxy, {**cfg, "detail_weight": 0.0, "noise_weight": 0.0, "empty_weight": 0.0}, info=info)
    assert set(on.checks) == set(CHECKS) and not off.checks and not off.needs_images and on.needs_images
    g = torch.Generator().manual_seed(4)
    noisy = dict(batch, image=(batch["image"] + torch.randn(batch["image"].shape, generator=g) * 0.3).clamp(-1, 1))
    empty = dict(batch, image=torch.zeros_like(batch["image"]))
    for bad in (noisy, empty):
        drop = off.predict_step(bad, 0)["rating"] - on.predict_step(bad, 0)["rating"]
        assert drop.min() > 1.0  # every image penalised
    # the clean batch itself loses nothing but for an outlier of its own reference; each reference is in the signature
    same = (on.predict_step(batch, 0)["rating"] - off.predict_step(batch, 0)["rating"]).abs() < 1e-4
    assert same.sum() >= 14
    assert {"detail", "noise", "empty", "noise_weight"} <= set(on.scoring_signature())
    # one check off: only its penalty goes
    no_noise = ProxyScorer(proxy, {**cfg, "noise_weight": 0.0}, info=info)
    assert set(no_noise.checks) == {"detail", "empty"}
    # a checkpoint from before the image checks (detail alone) still scores, with the detail check only
    old = ProxyScorer(proxy, cfg, info={"detail": refs["detail"].as_dict()})
    assert set(old.checks) == {"detail"}
    again = ProxyScorer.from_checkpoint(torch.load(on.save(tmp_path / "rater.ckpt"), weights_only=False), proxy=proxy)
    assert again.checks == on.checks
    # a reference measured with an earlier version of its statistic still scores, with a warning, and under
    # another scoring signature than an exact one
    assert on.scoring_signature()["detail_version"] == CHECKS["detail"].version
    stale = {k: {**r, "version": 1} if k == "detail" else r for k, r in info["image_checks"].items()}
    with caplog.at_level(logging.WARNING, logger="lightning_alchemist.rater.direct"):
        older = ProxyScorer(proxy, cfg, info={"image_checks": stale})
    assert "'detail' check's reference was measured with version 1" in caplog.text
    assert set(older.checks) == set(CHECKS) and older.scoring_signature() != on.scoring_signature()
    # a batch without images (cached features served without them) is refused in one line, before any encoder runs
    calls: list = []
    proxy.encode = lambda b: calls.append(b) or ToyProxy.encode(proxy, b)
    with pytest.raises(DataError, match=r"image checks \(detail, noise, empty\) read the images, but this batch has none"):
        on.predict_step({k: v for k, v in batch.items() if k != "image"}, 0)
    assert calls == []
