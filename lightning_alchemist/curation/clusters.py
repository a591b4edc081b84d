"""k-means on embeddings in bounded memory (scikit-learn's ``MiniBatchKMeans``), and chunked assignment.

The vectors may be a memory-mapped ``.npy``: fitting reads seeded chunks of rows (``partial_fit``) and
assignment runs a chunk at a time, so memory is the chunk plus the centroids, never the whole array.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lightning_alchemist.errors import ConfigError

__all__ = ["Clustering", "assign", "auto_clusters", "fit_kmeans", "groups"]


@dataclass
class Clustering:
    """Centroids ``[k, dim]``, each row's cluster id and its cosine distance to its centroid."""

    centroids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def auto_clusters(n: int) -> int:
    """The default cluster count for ``n`` samples: ``√n``, between 1 and 1000 (clusters of tens to thousands)."""
    return int(max(1, min(1000, round(math.sqrt(max(n, 1))))))


def _chunk_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # Sorted row reads are sequential on a memmap.
    return np.asarray(x[np.sort(rows)], dtype=np.float32)


def fit_kmeans(x: np.ndarray, k: int, seed: int = 0, batch_size: int = 4096, passes: int = 3,
               max_in_memory: int = 200_000) -> np.ndarray:
    """Centroids of ``k`` clusters of the rows of ``x`` (seeded).

    Up to ``max_in_memory`` rows: ``MiniBatchKMeans.fit`` on the array. Beyond: ``passes`` sweeps of
    ``partial_fit`` over seeded chunks of ``batch_size`` rows (the first chunk, at least ``3k`` rows, seeds
    k-means++), reading only the chunk from a memmap.
    """
    from sklearn.cluster import MiniBatchKMeans

    from lightning_alchemist.selection.draw import make_rng

    n = len(x)
    if not 1 <= k <= n:
        raise ConfigError(f"config 'curation.clusters': {k} clusters for {n} samples; expected 1 <= clusters <= samples")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's memory-leak note on Windows MKL; nothing to act on here
        if n <= max_in_memory:
            km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=min(batch_size, n), n_init=3,
                                 max_iter=100, init_size=min(n, max(3 * k, 3 * batch_size)))
            km.fit(np.asarray(x, dtype=np.float32))
            return km.cluster_centers_.astype(np.float32)
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=batch_size, n_init=1)
        rng = make_rng(seed, 4242)
        first = max(batch_size, 3 * k)
        for p in range(passes):
            order = rng.permutation(n)
            start = 0
            while start < n:
                size = first if (p == 0 and start == 0) else batch_size
                km.partial_fit(_chunk_rows(x, order[start:start + size]))
                start += size
        return km.cluster_centers_.astype(np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (Euclidean, as k-means fits) of every row, and the row's cosine distance to it.

    Rows are read ``chunk`` at a time (memmap-friendly; the scores are ``chunk × k`` floats: 64 MB at k = 1000);
    returns ``(labels int32, distances float32)``.
    """
    n = len(x)
    c = np.asarray(centroids, dtype=np.float32)
    c_sq = (c * c).sum(axis=1)
    c_unit = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(x[start:start + chunk], dtype=np.float32)
        # argmin |x - c|² = argmin (|c|² - 2 x·c): no [chunk, k, dim] temporary
        scores = block @ c.T
        scores *= -2.0
        scores += c_sq
        lab = scores.argmin(axis=1)
        labels[start:start + len(block)] = lab
        norms = np.maximum(np.linalg.norm(block, axis=1), 1e-12)
        dist[start:start + len(block)] = 1.0 - np.einsum("ij,ij->i", block, c_unit[lab]) / norms
    return labels, dist


def cluster(x: np.ndarray, k: Optional[int] = None, seed: int = 0, batch_size: int = 4096) -> Clustering:
    """Fit k-means (``k``: :func:`auto_clusters` when None or 0) and assign every row."""
    k = k or auto_clusters(len(x))
    centroids = fit_kmeans(x, min(k, len(x)), seed=seed, batch_size=batch_size)
    labels, dist = assign(x, centroids)
    return Clustering(centroids, labels, dist)


def groups(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by cluster: ``(order, bounds)``; cluster ``j`` is ``order[bounds[j]:bounds[j+1]]`` (rows ascending)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=k), out=bounds[1:])
    return order, bounds
