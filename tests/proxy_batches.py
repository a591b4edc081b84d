"""Synthetic data batches for the proxy tests (the data layer's batch contract, random images)."""

from __future__ import annotations

import torch

CAPTIONS = ["a small red circle above a large blue square on a white background",
            "a large green triangle on the left on a black background", "a photo", ""]


def make_batch(n: int = 4, size: int = 32, seed: int = 0, offset: int = 0) -> dict:
    """``n`` samples with seeded random images in [-1, 1]; keys and captions start at ``offset``."""
    g = torch.Generator().manual_seed(seed)
    return {"key": [f"k{offset + i}" for i in range(n)], "image": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "caption": [CAPTIONS[(offset + i) % len(CAPTIONS)] for i in range(n)], "meta": [{}] * n, "shard": ["s"] * n}
