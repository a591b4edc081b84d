"""Model-free image checks: native-resolution detail, pixel noise, near-empty images.

The proxy cannot see blur at the sizes it trains on: STAR's tokenizer at 32 px has a 4×4 latent
(8-pixel cells), and its last scale's loss on heavily blurred or 8×-downscaled images equals that of
clean ones (measured on ``shapes`` and ``glyphs``: mean last-scale cross-entropy 2.65 vs 2.68 and 2.48
vs 2.73; AUC clean-above-degraded 0.40–0.61 for every per-scale loss and caption gain;
``benchmarks/results/rater_detail.md``). An image has *detail at its own resolution* when a good
share of its variance lives in its finest octave; an image that was blurred, or upscaled from a
smaller one (smoothly or by pixel replication), has almost none. :func:`detail_share` measures that share:

    d = min(r_bilinear, 10 · r_nearest),  r_up = ‖x − up(down₂(x))‖² / ‖x − mean(x)‖²
        (grey level, 2× box down; nearest up on each 2×2 pixel grid)

and the rating subtracts a penalty for images whose ``log10 d`` lies far *below* what the clean
reference split shows (robust z under ``−threshold``; :func:`detail_penalty`). Only the low side of
the detail share is penalised: a sharp clean photo must not lose rating for being sharp.

Two more statistics cover what the proxy only half sees (``benchmarks/results/rater_detail_checks.md``):

- :func:`noise_level`: Donoho's robust estimate of additive pixel noise, ``median |HH| / 0.6745`` over
  the finest diagonal Haar band, in 8-bit grey levels. Edges and text barely move a median, so clean
  renders and photos sit near their sensor noise; heavy Gaussian or salt-and-pepper noise sits far
  *above* the reference (penalised on the high side). The proxy rated noisy text renders above clean
  ones 16 % of the time (their caption still explains the text under the noise).
- :func:`log_contrast`: ``log10`` of the grey-level standard deviation, in grey levels: a near-empty
  image (a plain background, a blank frame) lies far *below* the reference (penalised on the low side).

Each reference (median and robust spread, 1.4826·MAD, over the validation split) is computed once
with the warm-up and stored in the scorer's checkpoint, so a rating stays a function of the sample
alone (DESIGN.md §1: ratings are batch-independent). Images are as the datamodule gives them, in
``[-1, 1]``; the detail share is scale-free, the other two are read in 8-bit grey levels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CHECKS",
    "DetailReference",
    "checks_version",
    "dataset_image_references",
    "detail_penalty",
    "detail_reference",
    "detail_share",
    "image_references",
    "image_statistics",
    "log_contrast",
    "log_detail",
    "noise_level",
    "robust_penalty",
    "robust_reference",
]

# Floor of the share before the log: a flat image (no variance) has no detail to speak of.
_FLOOR = 1e-6
# A pixel-replicated image leaves (next to) nothing inside its 2x2 cells; a sharp render whose edges happen to lie on
# the cell grid leaves a few times less there than a smooth reconstruction does, and must not read as missing detail.
_REPLICATION_MARGIN = 10.0
# [-1, 1] images to 8-bit grey levels.
_GREY_LEVELS = 127.5


def _grey(images: Tensor, name: str) -> Tensor:
    """``[B, 1, H, W]`` grey level of ``[B, C, H, W]`` (or ``[B, H, W]``) images, any value range; ``name``: the
    statistic, for the error."""
    x = images.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images [B, C, H, W], got shape {tuple(images.shape)}")
    return x.mean(1, keepdim=True)


def _even_grey(images: Tensor, name: str) -> Tensor:
    """:func:`_grey` cropped to even height and width (the last odd row/column dropped) for 2×2 blocks."""
    g = _grey(images, name)
    h, w = (g.shape[-2] // 2) * 2, (g.shape[-1] // 2) * 2
    if h < 2 or w < 2:
        raise ValueError(f"{name}: images must be at least 2x2 pixels, got {tuple(images.shape[-2:])}")
    return g[..., :h, :w]


def _octave_share(g: Tensor, mode: str) -> Tensor:
    """``[B]``: the share of ``g``'s variance that its 2× box-down, ``mode``-up reconstruction leaves (0 for a flat ``g``)."""
    low = F.interpolate(F.avg_pool2d(g, 2), size=g.shape[-2:], mode=mode,
                        **({"align_corners": False} if mode == "bilinear" else {}))
    resid = (g - low).pow(2).mean((1, 2, 3))
    var = (g - g.mean((2, 3), keepdim=True)).pow(2).mean((1, 2, 3))
    return torch.where(var > 1e-12, resid / var.clamp_min(1e-12), torch.zeros_like(var)).clamp(0.0, 1.0)


def detail_share(images: Tensor) -> Tensor:
    """``[B]``: the share of each image's grey-level variance in its finest octave (0 = none, ~1 = noise).

    What a smooth 2× reconstruction (box down, bilinear up) leaves, which a blurred image fits; or, when
    smaller by a wide margin (10×), what a pixel-replicating one leaves (nearest up, on each of the four
    2×2 pixel grids), which an image upscaled by pixel replication fits exactly: its blocks have sharp
    edges, so the smooth one alone reads them as detail (version 2 of the check; version 1 had the smooth
    one only).
    Scale-free (a contrast or brightness change leaves it unchanged); images of odd size lose their
    last row/column; a flat image gets 0.
    """
    g = _even_grey(images, "detail_share")
    share = _octave_share(g, "bilinear")
    h, w = g.shape[-2:]
    for dy in (0, 1):
        for dx in (0, 1):
            # the grid shifted by one pixel loses the first row/column and, to stay even, the last
            crop = g[..., dy : h - dy, dx : w - dx]
            if crop.shape[-1] >= 2 and crop.shape[-2] >= 2:
                share = torch.minimum(share, _REPLICATION_MARGIN * _octave_share(crop, "nearest"))
    return share


def log_detail(images: Tensor) -> Tensor:
    """``[B]``: ``log10`` of :func:`detail_share` (floored at 1e-6)."""
    return detail_share(images).clamp_min(_FLOOR).log10()


def noise_level(images: Tensor) -> Tensor:
    """``[B]``: the robust noise estimate ``median |HH| / 0.6745`` of each image's grey level (HH: the finest
    diagonal Haar band), in 8-bit grey levels of ``[-1, 1]`` images; 0 for clean renders, tens for heavy noise."""
    g = _even_grey(images, "noise_level")[:, 0] * _GREY_LEVELS
    hh = (g[:, 0::2, 0::2] - g[:, 0::2, 1::2] - g[:, 1::2, 0::2] + g[:, 1::2, 1::2]) / 2
    return hh.abs().flatten(1).median(dim=1).values / 0.6745


def log_contrast(images: Tensor) -> Tensor:
    """``[B]``: ``log10`` of each image's grey-level standard deviation in 8-bit grey levels of ``[-1, 1]``
    images (floored at 0.01): about 1.5–2 for a scene, under 0.5 for a plain background."""
    g = _grey(images, "log_contrast") * _GREY_LEVELS
    return g.flatten(1).std(dim=1, unbiased=False).clamp_min(0.01).log10()


@dataclass(frozen=True)
class DetailReference:
    """Where clean images' statistic lies (the ``log10`` detail share, or another check's): its median and
    robust spread (1.4826·MAD, floored), and the version of the statistic it was measured with
    (:attr:`Check.version`; 1 for a reference stored before versions)."""

    median: float
    spread: float
    n: int
    version: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["DetailReference"]:
        if not d:
            return None
        return cls(float(d["median"]), float(d["spread"]), int(d.get("n", 0)), int(d.get("version", 1)))


def robust_reference(values: Iterable[Tensor], floor: float, version: int = 1) -> DetailReference:
    """The median and robust spread (1.4826·MAD, at least ``floor``) of the concatenated ``values``, measured with
    version ``version`` of their statistic."""
    v = torch.cat(list(values)).double()
    med = float(v.median())
    mad = float((v - med).abs().median()) * 1.4826
    # a split of near-identical images has no spread: keep the z finite with the statistic's tolerance
    return DetailReference(med, max(mad, floor), int(v.numel()), int(version))


def detail_reference(batches: Iterable[Tensor]) -> DetailReference:
    """The detail check's reference of a split from its image batches (``[B, C, H, W]`` each; e.g. the validation split)."""
    return image_references(batches, ["detail"])["detail"]


def robust_penalty(values: Tensor, ref: DetailReference, side: str, threshold: float = 2.0, weight: float = 1.0) -> Tensor:
    """``[B]``: ``weight · max(0, s·z − threshold)`` with ``z = (values − median) / spread`` and ``s`` −1 for a
    ``"low"`` check (penalise what lies far below the reference), +1 for a ``"high"`` one."""
    if side not in ("low", "high"):
        raise ValueError(f"robust_penalty: side must be 'low' or 'high', got {side!r}")
    if not math.isfinite(ref.spread) or ref.spread <= 0:
        raise ValueError(f"robust_penalty: the reference spread must be positive, got {ref.spread}")
    z = (values.double() - ref.median) / ref.spread
    z = -z if side == "low" else z
    return (weight * (z - threshold).clamp_min(0.0)).to(values.dtype)


def detail_penalty(logd: Tensor, ref: DetailReference, threshold: float = 2.0, weight: float = 1.0) -> Tensor:
    """``[B]``: ``weight · max(0, −z − threshold)`` with ``z = (logd − median) / spread``: zero for every
    image within ``threshold`` robust deviations below the reference (or above it), growing linearly
    with how far below it lies."""
    return robust_penalty(logd, ref, "low", threshold, weight)


@dataclass(frozen=True)
class Check:
    """One model-free image check: its statistic, which side of the reference is penalised, the spread's floor, and
    the statistic's version (bumped when its values change: a reference measured with another version is stale)."""

    statistic: Callable[[Tensor], Tensor]
    side: str
    floor: float
    version: int = 1


# name -> check; the names are the scorer's config prefixes (rater.<name>_weight, rater.<name>_threshold)
CHECKS: dict[str, Check] = {
    "detail": Check(log_detail, "low", 0.05, 2),  # blurred / upscaled (0.05 dex); 2: pixel-replicated upscales
    "noise": Check(noise_level, "high", 1.0),   # heavy pixel noise (one grey level: quantisation)
    "empty": Check(log_contrast, "low", 0.05),  # near-empty images (0.05 dex)
}


def checks_version() -> dict[str, int]:
    """``{check: version}`` of every check's statistic (part of what names a trained direct scorer)."""
    return {name: check.version for name, check in CHECKS.items()}


def image_statistics(images: Tensor, names: Iterable[str] = tuple(CHECKS)) -> dict[str, Tensor]:
    """``{name: [B]}``: the statistics of the checks named (see :data:`CHECKS`) on one batch of images."""
    return {n: CHECKS[n].statistic(images) for n in names}


def image_references(batches: Iterable[Tensor], names: Iterable[str] = tuple(CHECKS)) -> dict[str, DetailReference]:
    """``{name: reference}`` of a split from its image batches, one pass for every check named."""
    names = list(names)
    values: dict[str, list[Tensor]] = {n: [] for n in names}
    for b in batches:
        if b is None or not len(b):
            continue
        for n, v in image_statistics(b, names).items():
            values[n].append(v)
    if not names or not values[names[0]]:
        raise ValueError("image_references: no images given; the references need the validation split's images")
    return {n: robust_reference(values[n], CHECKS[n].floor, CHECKS[n].version) for n in names}


def _image_batches(dataset: Any, batch_size: int) -> Iterable[Tensor]:
    from torch.utils.data import DataLoader

    from lightning_alchemist.data.sample import collate_samples

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_samples)
    return (b["image"] for b in loader if len(b.get("key") or []))


def dataset_image_references(dataset: Any, names: Iterable[str] = tuple(CHECKS), batch_size: int = 256) -> dict[str, DetailReference]:
    """:func:`image_references` of a map-style dataset's images, one decoding pass (undecodable samples are
    skipped by the collate)."""
    return image_references(_image_batches(dataset, batch_size), names)
