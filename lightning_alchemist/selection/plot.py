"""The picture a user checks after selecting: ratings histogram and kept share per rank percentile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow.compute as pc

from lightning_alchemist.selection.draw import rank_order
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings

__all__ = ["kept_mask", "kept_share_by_percentile", "plot_selection", "selection_title"]


def kept_mask(ratings: Ratings, selection: Selection) -> np.ndarray:
    """Boolean per rating row: is it in the selection (with positive weight)?"""
    if selection.indices is not None and len(selection.indices) == len(selection) and selection.meta.get("num_rated") == len(ratings):
        mask = np.zeros(len(ratings), dtype=bool)
        mask[selection.indices[selection.weights > 0]] = True
        return mask
    positive = selection.keys.filter(selection.weights > 0)
    return pc.is_in(ratings.keys, value_set=positive.combine_chunks()).to_numpy(zero_copy_only=False)


def kept_share_by_percentile(ratings: Ratings, mask: np.ndarray, bins: int = 50) -> np.ndarray:
    """Share of each rank-percentile bin (highest rating first) that is kept."""
    order = rank_order(ratings.ratings)
    kept_in_rank_order = mask[order]
    edges = np.linspace(0, len(ratings), bins + 1).round().astype(np.int64)
    # Prefix sums, not reduceat: with fewer samples than bins some bins are empty (reduceat misreads those).
    cumulative = np.concatenate([[0], np.cumsum(kept_in_rank_order, dtype=np.int64)])
    counts = cumulative[edges[1:]] - cumulative[edges[:-1]]
    return counts / np.maximum(np.diff(edges), 1)


def selection_title(meta: dict) -> str:
    """``shift_gauss (n=0.2, mu=0.6, sigma=0.2), keep=0.5``: a strategy and its parameters as a person reads them."""
    params = meta.get("params") or {}
    parts = []
    for k, v in params.items():
        if isinstance(v, float):
            v = f"{v:g}"
        elif isinstance(v, (dict, list)):
            continue  # nested settings (a schedule) do not fit a title; the manifest holds them
        parts.append(f"{k}={v}")
    inner = f" ({', '.join(parts)})" if parts else ""
    return f"{meta.get('strategy')}{inner}, keep={meta.get('keep')}"


def plot_selection(
    ratings: Ratings, selection: Selection, path: Union[str, os.PathLike], bins: int = 50, title: Optional[str] = None
) -> Path:
    """Write a PNG: rating histogram (all vs kept) and kept share per rank percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = kept_mask(ratings, selection)
    share = kept_share_by_percentile(ratings, mask, bins)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    values = np.asarray(ratings.ratings, dtype=np.float64)
    finite = np.isfinite(values)  # ±inf ratings rank first/last but have no place on a histogram's axis
    edges = np.histogram_bin_edges(values[finite], bins=60) if finite.any() else np.linspace(0, 1, 61)
    ax1.hist(values[finite], bins=edges, color="0.7", label=f"all ({len(ratings)})")
    ax1.hist(values[mask & finite], bins=edges, color="C0", alpha=0.8, label=f"kept ({int(mask.sum())})")
    infinite = int((~finite).sum())
    ax1.set_xlabel("rating (higher = rated better/easier)" + (f"; {infinite} infinite not shown" if infinite else ""))
    ax1.set_ylabel("samples")
    ax1.legend()
    centers = (np.arange(bins) + 0.5) / bins * 100
    ax2.bar(centers, share, width=100 / bins, color="C0")
    ax2.set_xlabel("rank percentile (0 = highest rating)")
    ax2.set_ylabel("kept share")
    ax2.set_ylim(0, 1.05)
    meta = selection.meta
    ax2.set_title(title or selection_title(meta), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
