"""Native-resolution detail: the model-free check that finds blurred and upscaled images.

The proxy cannot see blur at the sizes it trains on: STAR's tokenizer at 32 px has a 4×4 latent
(8-pixel cells), and its last scale's loss on heavily blurred or 8×-downscaled images equals that of
clean ones (measured on ``shapes`` and ``glyphs``: mean last-scale cross-entropy 2.65 vs 2.68 and 2.48
vs 2.73; AUC clean-above-degraded 0.40–0.61 for every per-scale loss and caption gain;
``benchmarks/results/rater_detail.md``). An image has *detail at its own resolution* when a good
share of its variance lives in its finest octave; an image that was blurred, or upscaled from a
smaller one, has almost none. :func:`detail_share` measures that share:

    d = ‖x − up₂(down₂(x))‖² / ‖x − mean(x)‖²   (grey level, 2× box down, bilinear up)

and the rating subtracts a penalty for images whose ``log10 d`` lies far *below* what the clean
reference split shows (robust z under ``−threshold``; :func:`detail_penalty`). Only the low side is
penalised: the high side (noise, clutter) is the proxy's to judge, and a sharp clean photo must not
lose rating for being sharp. The reference (median and MAD of ``log10 d`` over the validation split)
is computed once with the warm-up and stored in the scorer's checkpoint, so a rating stays a
function of the sample alone (DESIGN.md §1: ratings are batch-independent).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DetailReference", "dataset_detail_reference", "detail_penalty", "detail_reference", "detail_share", "log_detail"]

# Floor of the share before the log: a flat image (no variance) has no detail to speak of.
_FLOOR = 1e-6


def _grey(images: Tensor) -> Tensor:
    """``[B, 1, H, W]`` grey level of ``[B, C, H, W]`` (or ``[B, H, W]``) images, any value range."""
    x = images.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"detail_share: expected images [B, C, H, W], got shape {tuple(images.shape)}")
    return x.mean(1, keepdim=True)


def detail_share(images: Tensor) -> Tensor:
    """``[B]``: the share of each image's grey-level variance in its finest octave (0 = none, ~1 = noise).

    Scale-free (a contrast or brightness change leaves it unchanged); images of odd size lose their
    last row/column; a flat image gets 0.
    """
    g = _grey(images)
    h, w = (g.shape[-2] // 2) * 2, (g.shape[-1] // 2) * 2
    if h < 2 or w < 2:
        raise ValueError(f"detail_share: images must be at least 2x2 pixels, got {tuple(images.shape[-2:])}")
    g = g[..., :h, :w]
    low = F.interpolate(F.avg_pool2d(g, 2), size=(h, w), mode="bilinear", align_corners=False)
    resid = (g - low).pow(2).mean((1, 2, 3))
    var = (g - g.mean((2, 3), keepdim=True)).pow(2).mean((1, 2, 3))
    return torch.where(var > 1e-12, resid / var.clamp_min(1e-12), torch.zeros_like(var)).clamp(0.0, 1.0)


def log_detail(images: Tensor) -> Tensor:
    """``[B]``: ``log10`` of :func:`detail_share` (floored at 1e-6)."""
    return detail_share(images).clamp_min(_FLOOR).log10()


@dataclass(frozen=True)
class DetailReference:
    """Where clean images' ``log10`` detail share lies: its median and robust spread (1.4826·MAD)."""

    median: float
    spread: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["DetailReference"]:
        if not d:
            return None
        return cls(float(d["median"]), float(d["spread"]), int(d.get("n", 0)))


def detail_reference(batches: Iterable[Tensor]) -> DetailReference:
    """The reference of a split from its image batches (``[B, C, H, W]`` each; e.g. the validation split)."""
    values = [log_detail(b) for b in batches if b is not None and len(b)]
    if not values:
        raise ValueError("detail_reference: no images given; the reference needs the validation split's images")
    v = torch.cat(values).double()
    med = float(v.median())
    mad = float((v - med).abs().median()) * 1.4826
    # a split of near-identical images has no spread: keep the z finite (0.05 dex is a tiny tolerance)
    return DetailReference(med, max(mad, 0.05), int(v.numel()))


def detail_penalty(logd: Tensor, ref: DetailReference, threshold: float = 2.0, weight: float = 1.0) -> Tensor:
    """``[B]``: ``weight · max(0, −z − threshold)`` with ``z = (logd − median) / spread``: zero for every
    image within ``threshold`` robust deviations below the reference (or above it), growing linearly
    with how far below it lies."""
    if not math.isfinite(ref.spread) or ref.spread <= 0:
        raise ValueError(f"detail_penalty: the reference spread must be positive, got {ref.spread}")
    z = (logd.double() - ref.median) / ref.spread
    return (weight * (-z - threshold).clamp_min(0.0)).to(logd.dtype)


def dataset_detail_reference(dataset: Any, batch_size: int = 256) -> DetailReference:
    """:func:`detail_reference` of a map-style dataset's images (undecodable samples are skipped by the collate)."""
    from torch.utils.data import DataLoader

    from lightning_alchemist.data.sample import collate_samples

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_samples)
    return detail_reference(b["image"] for b in loader if len(b.get("key") or []))
