"""Concept-cluster budgets (density-based pruning, Abbas, Rusak et al., ICLR 2024) and rebalancing weights.

A cluster's *complexity* is its spread times its isolation, ``C_j = d_intra · d_inter``: ``d_intra`` the
mean cosine distance of its members to its centroid, ``d_inter`` the mean cosine distance from its centroid
to its ``neighbors`` nearest other centroids. The kept share of a cluster follows ``softmax(C / tau)``; the
integer budgets sum exactly to the requested count, each between a floor ``min(m, n_j)`` and its size ``n_j``
(water-filling: ``x_j = clip(P_j·N + λ, lo_j, n_j)`` with λ found by bisection, the answer of the paper's small
QP, then rounded by largest remainders). A tight, isolated concept ("elephant") gets few samples, a spread
one ("dog") many.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lightning_alchemist.config import Choice
from lightning_alchemist.errors import ConfigError

__all__ = ["Rebalance", "cluster_budgets", "cluster_complexity", "intra_distances", "rebalance_weights", "standardised"]


def intra_distances(labels: np.ndarray, distances: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of each cluster's members to its centroid (0 for an empty cluster)."""
    sums = np.bincount(labels, weights=distances, minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def cluster_complexity(centroids: np.ndarray, d_intra: np.ndarray, neighbors: int = 20) -> np.ndarray:
    """``C_j = d_intra_j · d_inter_j`` (``d_inter``: mean ``1 − cos`` to the ``neighbors`` nearest other centroids)."""
    c = np.asarray(centroids, dtype=np.float64)
    k = len(c)
    if k < 2:
        return np.asarray(d_intra, dtype=np.float64) * 1.0
    unit = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - unit @ unit.T
    np.fill_diagonal(dist, np.inf)
    m = max(1, min(neighbors, k - 1))
    nearest = np.partition(dist, m - 1, axis=1)[:, :m]
    return np.asarray(d_intra, dtype=np.float64) * nearest.mean(axis=1)


def standardised(c: np.ndarray, where: Optional[np.ndarray] = None) -> np.ndarray:
    """``(c − mean) / std`` with mean and std over ``where`` (default all); zeros where the std is 0."""
    c = np.asarray(c, dtype=np.float64)
    sel = c if where is None else c[where]
    if len(sel) == 0:
        return np.zeros_like(c)
    std = float(sel.std())
    return (c - float(sel.mean())) / std if std > 0 else np.zeros_like(c)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def cluster_budgets(sizes: np.ndarray, complexity: np.ndarray, total: int, tau: float = 0.5,
                    floor: Optional[int] = None, standardise: bool = False) -> np.ndarray:
    """Integer budgets per cluster: ``Σ = total`` exactly, ``min(floor, n_j) <= x_j <= n_j``, close to ``softmax(C/τ)·total``.

    ``floor``: the per-cluster minimum ``m`` (default ``total / k · 0.5``, the reference's value).
    ``standardise``: use the complexities' z-scores over the non-empty clusters (``(C − mean) / std``), so that
    ``tau`` does not depend on the embedding's distance scale (raw complexities of a cheap embedding can be
    small against any fixed ``tau``, which makes the budgets near-uniform).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    k = len(sizes)
    if tau <= 0:
        raise ConfigError(f"config 'curation.tau': got {tau}, expected > 0")
    if not 0 <= total <= sizes.sum():
        raise ConfigError(f"curation budgets: {total} samples asked of clusters holding {int(sizes.sum())}; "
                          "expected 0 <= keep count <= the samples left")
    if k == 0 or total == 0:
        return np.zeros(k, dtype=np.int64)
    m = int(total / k * 0.5) if floor is None else int(floor)
    lo = np.minimum(max(m, 0), sizes).astype(np.float64)
    if lo.sum() > total:  # a floor the total cannot pay for: lower it evenly
        lo = np.minimum(total // k, sizes).astype(np.float64)
    hi = sizes.astype(np.float64)
    c = np.asarray(complexity, dtype=np.float64)
    if standardise:
        c = standardised(c, sizes > 0)
    target = _softmax(c / tau) * total

    def filled(lam: float) -> np.ndarray:
        return np.clip(target + lam, lo, hi)

    a, b = -float(total) - 1.0, float(hi.max()) + 1.0  # filled(a) = lo (sum <= total), filled(b) = hi (sum >= total)
    for _ in range(200):
        mid = 0.5 * (a + b)
        if filled(mid).sum() < total:
            a = mid
        else:
            b = mid
        if b - a < 1e-9:
            break
    x = filled(b)
    base = np.floor(x + 1e-9).astype(np.int64)
    base = np.clip(base, lo.astype(np.int64), sizes)
    rest = int(total - base.sum())
    if rest > 0:
        frac = x - base
        frac[base >= sizes] = -np.inf
        order = np.lexsort((np.arange(k), -frac))  # largest remainder first, ties by cluster id
        base[order[:rest]] += 1
    elif rest < 0:
        frac = x - base
        frac[base <= lo] = np.inf
        order = np.lexsort((np.arange(k), frac))
        base[order[:-rest]] -= 1
    assert base.sum() == total and (base <= sizes).all() and (base >= 0).all()
    return base


class Rebalance(Choice):
    """How per-cluster sampling weights reshape the cluster frequencies of a selection."""

    none = "none"                # every sample weight 1: clusters are seen as often as they are kept
    uniform = "uniform"          # every cluster seen equally often
    sqrt = "sqrt"                # cluster frequency ∝ √(its count)
    temperature = "temperature"  # cluster frequency ∝ count^T (T = 1: none, T = 0: uniform)


def rebalance_weights(labels: np.ndarray, mode: str = "sqrt", temperature: float = 0.5) -> np.ndarray:
    """Per-sample weights (mean 1) so that each cluster's total weight is ∝ ``count_j^T``.

    ``uniform`` is ``T = 0``, ``sqrt`` is ``T = 0.5``, ``none`` is ``T = 1`` (all ones). A sample's weight is
    ``count_j^(T − 1)``: a long tail of rare clusters gains draws from the frequent ones.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0)
    power = {"none": 1.0, "uniform": 0.0, "sqrt": 0.5}.get(str(mode))
    if str(mode) == "temperature":
        if not 0.0 <= temperature <= 1.0:
            raise ConfigError(f"config 'curation.rebalance_temperature': got {temperature}, expected in [0, 1]")
        power = float(temperature)
    if power is None:
        raise ConfigError(f"config 'curation.rebalance': got '{mode}', expected one of {', '.join(Rebalance.values())}")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** (power - 1.0)
    return w * (len(w) / w.sum())
