"""The sample and batch types every stage shares, and the collate function that builds batches."""

from __future__ import annotations

from typing import Any, Optional, Sequence, TypedDict

import torch
from torch import Tensor


class Sample(TypedDict):
    """One image–caption pair.

    ``key`` is the webdataset ``__key__`` (everything joins on it), ``image`` a float tensor
    ``[C, H, W]`` in [-1, 1], ``meta`` the parsed ``.json`` member (empty if none) and ``shard``
    the path of the shard the sample came from.
    """

    key: str
    image: Tensor
    caption: str
    meta: dict[str, Any]
    shard: str


def collate_samples(samples: Sequence[Optional[Sample]]) -> dict[str, Any]:
    """Stack samples into a batch; ``None`` entries (undecodable samples) are dropped.

    Returns ``{"key": list[str], "image": [B,C,H,W], "caption": list[str], "meta": list[dict],
    "shard": list[str]}``. An all-``None`` input gives a batch with ``B = 0``.
    """
    kept = [s for s in samples if s is not None]
    if not kept:
        return {"key": [], "image": torch.empty(0), "caption": [], "meta": [], "shard": []}
    return {
        "key": [s["key"] for s in kept],
        "image": torch.stack([s["image"] for s in kept]),
        "caption": [s["caption"] for s in kept],
        "meta": [s["meta"] for s in kept],
        "shard": [s["shard"] for s in kept],
    }
