"""Near-duplicate removal, SemDeDup style (Abbas et al. 2023): within each k-means cluster, keep one of each near-copy group.

Inside a cluster the members are visited in priority order (the one to keep first); a member is dropped
when its cosine similarity to an already *kept* member exceeds ``1 − eps`` (exact greedy, not the
"similar to any earlier member" shortcut, which also drops the far end of a chain a ~ b ~ c).
The pairwise work is blocked: ``block`` members at a time against the kept ones, so memory stays
``block × kept`` per cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lightning_alchemist.config import Choice
from lightning_alchemist.curation.clusters import groups
from lightning_alchemist.errors import ConfigError

__all__ = ["DedupResult", "KeepRule", "priority", "semdedup"]


class KeepRule(Choice):
    """Which member of a near-copy group stays."""

    rating = "rating"    # the highest rating (ties: the most central)
    central = "central"  # the closest to its cluster's centroid
    random = "random"    # a seeded random one


@dataclass
class DedupResult:
    """``keep`` mask over the rows; ``dup_of[i]``: the kept row that made row ``i`` a copy (-1 if kept)."""

    keep: np.ndarray
    dup_of: np.ndarray

    @property
    def dropped(self) -> int:
        return int((~self.keep).sum())


def priority(rule: str, distances: np.ndarray, ratings: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """A score per row, higher = kept first, for ``rule`` (see :class:`KeepRule`)."""
    from lightning_alchemist.selection.draw import make_rng

    d = np.asarray(distances, dtype=np.float64)
    if rule == "central":
        return -d
    if rule == "random":
        return make_rng(seed, 5151).random(len(d))
    if rule == "rating":
        if ratings is None:
            return -d
        r = np.asarray(ratings, dtype=np.float64)
        # rank by rating, then by centrality: one float key (ranks are exact, no scale assumptions)
        order = np.lexsort((d, -r))
        out = np.empty(len(d))
        out[order] = -np.arange(len(d), dtype=np.float64)
        return out
    raise ConfigError(f"config 'curation.which_to_keep': got '{rule}', expected one of {', '.join(KeepRule.values())}")


def _greedy(block: np.ndarray, kept: np.ndarray, n_kept: int, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact greedy over one block (rows in priority order): ``(keep mask, index of the matching kept vector or -1)``.

    ``kept[:n_kept]`` are the vectors kept before the block; in-block matches are given as ``n_kept + j``.
    """
    b = len(block)
    dup = np.full(b, -1, dtype=np.int64)
    if n_kept:
        s = block @ kept[:n_kept].T
        best = s.argmax(axis=1)
        hit = s[np.arange(b), best] > thr
        dup[hit] = best[hit]
    keep = dup < 0
    cand = np.flatnonzero(keep)
    if len(cand) > 1:
        w = block[cand] @ block[cand].T
        earlier = np.triu(w > thr, k=1).T  # earlier[a, c]: candidate c (before a) is similar to a
        for a in np.flatnonzero(earlier.any(axis=1)):  # only rows with an earlier similar candidate need the loop
            similar = np.flatnonzero(earlier[a, :a] & keep[cand[:a]])
            if len(similar):
                keep[cand[a]] = False
                dup[cand[a]] = n_kept + int(cand[similar[np.argmax(w[a, similar])]])
    return keep, dup


def _split(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sub-cluster ids of the rows of a large cluster: a seeded k-means into parts of about ``size / 2`` rows."""
    import warnings

    from sklearn.cluster import MiniBatchKMeans

    parts = int(np.ceil(len(x) / max(size // 2, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = MiniBatchKMeans(n_clusters=parts, random_state=seed, batch_size=2048, n_init=1, max_iter=20)
        return km.fit_predict(x)


def semdedup(vectors: np.ndarray, labels: np.ndarray, k: int, eps: float, prio: np.ndarray,
             block: int = 1024, max_cluster: int = 4096, seed: int = 0, alive: Optional[np.ndarray] = None) -> DedupResult:
    """Drop near-copies inside each cluster; ``prio`` (higher first) says which member of a group stays.

    ``alive``: a mask of the rows taking part (the others are neither dropped nor anyone's kept copy); None: all.

    ``vectors``: L2-normalised rows (a memmap is fine: one cluster's rows are read at a time). A cluster of more
    than ``max_cluster`` rows is first split by a seeded k-means of its own (parts of ~``max_cluster / 2``), so
    the pairwise work stays ``N · max_cluster`` however few the concept clusters are (near-copies sit together).
    """
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"config 'curation.eps': got {eps}, expected 0 <= eps < 1 (drop pairs with cosine > 1 - eps)")
    thr = 1.0 - eps
    n = len(labels)
    keep = np.ones(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    order, bounds = groups(labels, k)
    for j in range(k):
        members = order[bounds[j]:bounds[j + 1]]
        if alive is not None:
            members = members[alive[members]]
        if len(members) < 2:
            continue
        x_all = np.asarray(vectors[members], dtype=np.float32)  # members ascending: sequential reads
        if len(members) > max_cluster:
            sub = _split(x_all, max_cluster, seed + j)
            parts = [np.flatnonzero(sub == s) for s in range(int(sub.max()) + 1)]
        else:
            parts = [np.arange(len(members))]
        for part in parts:
            if len(part) >= 2:
                _dedup_group(members[part], x_all[part], prio, thr, block, keep, dup_of)
    return DedupResult(keep, dup_of)


def _dedup_group(members: np.ndarray, x: np.ndarray, prio: np.ndarray, thr: float, block: int,
                 keep: np.ndarray, dup_of: np.ndarray) -> None:
    """Exact greedy over one group of rows (``x``: their vectors), in priority order; writes ``keep`` and ``dup_of``."""
    by_prio = np.argsort(-prio[members], kind="stable")
    members, x = members[by_prio], x[by_prio]
    kept_vecs = np.empty_like(x)
    kept_rows = np.empty(len(members), dtype=np.int64)
    n_kept = 0
    for start in range(0, len(members), block):
        blk = x[start:start + block]
        rows = members[start:start + block]
        k_mask, dup = _greedy(blk, kept_vecs, n_kept, thr)
        # a match in the block points past n_kept: map it to the row kept there
        block_kept_rows = np.concatenate([kept_rows[:n_kept], rows])
        hit = ~k_mask
        dup_of[rows[hit]] = block_kept_rows[dup[hit]]
        keep[rows[hit]] = False
        m = int(k_mask.sum())
        kept_vecs[n_kept:n_kept + m] = blk[k_mask]
        kept_rows[n_kept:n_kept + m] = rows[k_mask]
        n_kept += m
