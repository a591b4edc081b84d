"""The curation plan: quality filter → dedup → concept-cluster budgets → the rater's selection inside them → rebalancing.

:func:`curate` takes the pool's :class:`~lightning_alchemist.selection.ratings.Ratings` (constant ratings for a
rating-free strategy), its :class:`~lightning_alchemist.curation.embeddings.Embeddings` and the selection
strategy, and returns a :class:`CurationResult`: the :class:`~lightning_alchemist.selection.manifest.Selection`
to train on plus per-sample provenance for every pool row. :meth:`CurationResult.write` puts

- ``selection.parquet``: the kept rows (``key``, ``weight``, and the provenance columns ``cluster`` and
  ``stage``, the stage that kept the row), readable by :meth:`Selection.read` and any Parquet reader;
- ``curation.parquet``: every pool row with ``cluster``, ``stage`` (the stage that dropped or kept it:
  ``no_embedding``, ``quality``, ``dedup``, ``budget``, ``selection``), ``kept``, ``dup_of`` (the kept copy's key), the
  distance to its centroid and its weight;
- ``curation.json``: the counts per stage and the cluster sizes before and after.

The keep count is ``round(keep · N)`` of the whole pool: dedup removes copies first; when fewer samples than
that survive, all survivors are kept (``meta["curation"]["short"]``). With ``keep_of=survivors`` it is ``keep`` of
what dedup left instead: the selection's cut stays at the rater's percentile rather than reaching into the noisy
tail to refill the places the copies held (a smaller selection, trained for the same steps).

With budgets, a **quality filter** runs first (DBP assumes already quality-filtered data): the lowest-rated
``1 − quality_keep`` of the pool, the ranking's declared noise tail, is dropped before dedup and budgets.
Without it a cluster of noise gets its budget like any concept, and inside it every candidate is noise.
The budgets' shares are ``softmax(z / tau)`` of the complexities standardised over the clusters
(``complexity_scale=std``), so ``tau`` has one meaning whatever the embedding's distance scale.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.config import Choice, as_container
from lightning_alchemist.curation.budgets import Rebalance, cluster_budgets, cluster_complexity, intra_distances, rebalance_weights
from lightning_alchemist.curation.clusters import assign, auto_clusters, fit_kmeans, groups
from lightning_alchemist.curation.dedup import KeepRule, priority, semdedup
from lightning_alchemist.curation.embeddings import Embeddings, EmbeddingsConfig
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings
from lightning_alchemist.selection.strategies import Random, Strategy

__all__ = ["STAGES", "ComplexityScale", "CurationConfig", "CurationResult", "Inside", "KeepOf", "blas_threads", "curate",
           "curation_config", "quality_filter"]


STAGES = ("no_embedding", "quality", "dedup", "budget", "selection")
"""The values of the provenance ``stage`` column: the stage that dropped (or, for kept rows, last kept) a row."""


class Inside(Choice):
    """How a cluster's budget is filled (``curation.inside``)."""

    rater = "rater"        # the selection strategy on the cluster's ratings (Shift-Gaussian, top-k, random ...)
    farthest = "farthest"  # the members farthest from the centroid first (the "hard" end, as in DBP)


class KeepOf(Choice):
    """What ``keep`` is a fraction of under curation (``curation.keep_of``)."""

    pool = "pool"            # round(keep · N) of the whole pool: the stages after dedup reach deeper to fill it
    survivors = "survivors"  # round(keep · M) of the M samples left by the filter and dedup: the rater's cut stays
                             # at the same percentile, and the copies' share of the count is not refilled


class ComplexityScale(Choice):
    """How cluster complexities are scaled before ``softmax(· / tau)`` (``curation.complexity_scale``)."""

    std = "std"  # standardised over the clusters (z-scores): tau means the same on any embedding
    raw = "raw"  # as measured (spread · isolation in cosine-distance units): tau depends on the embedding


@dataclass
class CurationConfig:
    """Schema of the ``curation`` group: which stages run and their parameters (``curation=none`` runs none)."""

    name: str = "none"
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    # k-means clusters; 0: √N, between 1 and 1000.
    clusters: int = 0
    # Near-duplicate removal: drop a member whose cosine to a kept one exceeds 1 - eps; which_to_keep picks the survivor.
    dedup: bool = False
    eps: float = 0.02  # 0.02: exact copies and faint near-copies on the fallback embeddings (benchmarks/results/curation.md)
    which_to_keep: KeepRule = KeepRule.rating
    # Concept-cluster budgets (DBP): shares softmax(complexity / tau), a floor per cluster (null: keep / k · 0.5).
    budgets: bool = False
    tau: float = 0.5
    complexity_scale: ComplexityScale = ComplexityScale.std
    # With budgets: share of the pool the quality filter keeps before dedup and budgets (the lowest-rated rest, the
    # ranking's noise tail, is dropped); null: halfway between keep and 1; 1.0: no filter. Needs ratings.
    quality_keep: Optional[float] = None
    neighbors: int = 20
    floor: Optional[int] = None
    inside: Inside = Inside.rater
    # keep of the pool, or of the samples left after the quality filter and dedup (fewer kept, none refilled).
    keep_of: KeepOf = KeepOf.pool
    # Per-cluster sampling weights of the kept samples (the run then trains with mode=weighted).
    rebalance: Rebalance = Rebalance.none
    rebalance_temperature: float = 0.5
    seed: Optional[int] = None  # null: the run's seed

    def __post_init__(self) -> None:
        if self.clusters < 0:
            raise ConfigError(f"config 'curation.clusters': got {self.clusters}, expected >= 0 (0: automatic)")
        if not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"config 'curation.eps': got {self.eps}, expected 0 <= eps < 1 (pairs with cosine > 1 - eps are copies)")
        if self.tau <= 0:
            raise ConfigError(f"config 'curation.tau': got {self.tau}, expected > 0")
        if self.quality_keep is not None and not 0.0 < self.quality_keep <= 1.0:
            raise ConfigError(f"config 'curation.quality_keep': got {self.quality_keep}, expected in (0, 1] or null (automatic)")
        if self.neighbors < 1:
            raise ConfigError(f"config 'curation.neighbors': got {self.neighbors}, expected >= 1")
        if self.floor is not None and self.floor < 0:
            raise ConfigError(f"config 'curation.floor': got {self.floor}, expected >= 0 or null")
        if not 0.0 <= self.rebalance_temperature <= 1.0:
            raise ConfigError(f"config 'curation.rebalance_temperature': got {self.rebalance_temperature}, expected in [0, 1]")
        for name, choice in (("which_to_keep", KeepRule), ("inside", Inside), ("rebalance", Rebalance),
                             ("complexity_scale", ComplexityScale), ("keep_of", KeepOf)):
            if getattr(self, name) not in choice.values():
                raise ConfigError(f"config 'curation.{name}': got '{getattr(self, name)}', expected one of {', '.join(choice.values())}")

    @property
    def active(self) -> bool:
        """Whether any stage runs (``curation=none``: the pipeline is unchanged)."""
        return bool(self.dedup or self.budgets or self.rebalance != "none")

    @property
    def mode(self) -> str:
        """The sampler mode the selection needs: ``weighted`` when rebalancing, else ``subset``."""
        return "weighted" if self.rebalance != "none" else "subset"

    def identity(self) -> dict[str, Any]:
        """The parameters the result depends on (the cache key; the embeddings are keyed separately)."""
        out = as_container(self)
        out.pop("embeddings", None)
        out.pop("name", None)
        return out


def curation_config(node: Any) -> CurationConfig:
    """Validate the ``curation`` group (a DictConfig, mapping, None or a :class:`CurationConfig`)."""
    from lightning_alchemist.config import to_dataclass

    return to_dataclass(node, CurationConfig, "curation")


@dataclass
class CurationResult:
    """The selection to train on, every pool row's provenance, and the summary (counts, cluster sizes)."""

    selection: Selection
    provenance: pa.Table
    summary: dict[str, Any]

    def write(self, folder: Union[str, os.PathLike]) -> dict[str, Path]:
        """``selection.parquet`` (kept rows + ``cluster``, ``stage``), ``curation.parquet``, ``curation.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = self.selection.to_table()
        kept = self.provenance.filter(self.provenance.column("kept"))
        table = table.append_column("cluster", kept.column("cluster")).append_column("stage", kept.column("stage"))
        paths = {"selection": folder / "selection.parquet", "provenance": folder / "curation.parquet",
                 "summary": folder / "curation.json"}
        tag = f".{os.getpid()}.tmp"  # per process: DDP ranks may build the same cached stage side by side
        for name, tab in (("provenance", self.provenance), ("selection", table)):
            pq.write_table(tab, f"{paths[name]}{tag}")
            os.replace(f"{paths[name]}{tag}", paths[name])
        Path(f"{paths['summary']}{tag}").write_text(json.dumps(self.summary, indent=2, default=str))
        os.replace(f"{paths['summary']}{tag}", paths["summary"])
        return paths


def _pick(strategy: Strategy, ratings: Ratings, rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` of ``rows`` (positions in ``ratings``) chosen by ``strategy`` on their ratings alone."""
    if k >= len(rows):
        return rows
    if k <= 0:
        return rows[:0]
    sub = Ratings(ratings.keys.take(pa.array(rows)), ratings.ratings[rows], ranking=ratings.ranking)
    picked = strategy._pick(sub, k, seed)  # the strategy's own rule, with an exact count
    if picked.dtype == bool:
        picked = np.flatnonzero(picked)
    return rows[np.sort(picked)]


def quality_filter(ratings: Ratings, rows: np.ndarray, share: float) -> np.ndarray:
    """A boolean mask over ``rows``: the ``round(share · N)`` highest-rated of them kept (``N``: the pool).

    The dropped rows are the bottom of the ranking, which every objective declares the noise tail
    (:class:`~lightning_alchemist.rater.signals.RankingEnds`); ties are broken by position (deterministic).
    """
    mask = np.ones(len(rows), dtype=bool)
    want = int(round(share * len(ratings)))
    if want >= len(rows):
        return mask
    order = np.argsort(-ratings.ratings[rows], kind="stable")
    mask[order[want:]] = False
    return mask


def _quality_share(cfg: CurationConfig, keep: float) -> float:
    """The quality filter's share of the pool: ``quality_keep``, or halfway between ``keep`` and 1."""
    return float(cfg.quality_keep) if cfg.quality_keep is not None else 0.5 * (1.0 + min(float(keep), 1.0))


def blas_threads(threads: Optional[int]) -> Any:
    """A context bounding the BLAS/OpenMP pools (k-means, the blocked similarities) to ``threads``; None: unchanged.

    On a shared machine an oversubscribed BLAS pool makes the small matrix products of dedup ~10x slower.
    """
    import contextlib

    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads))


def curate(ratings: Ratings, embeddings: Embeddings, cfg: CurationConfig, strategy: Optional[Strategy], keep: float,
           seed: int = 0, has_ratings: bool = True, threads: Optional[int] = None) -> CurationResult:
    """Run the configured stages on the pool ``ratings`` covers (see the module docstring).

    ``strategy``: picks inside the survivors (or inside each cluster's budget); None = random.
    ``has_ratings``: False when ``ratings`` are constants (a rating-free strategy): ``which_to_keep=rating``
    then falls back to the most central member, and the quality filter does not run (nothing to filter by). ``threads``: bound on the BLAS threads (the run's thread count).
    """
    with blas_threads(threads):
        return _curate(ratings, embeddings, cfg, strategy, keep, seed, has_ratings)


def _curate(ratings: Ratings, embeddings: Embeddings, cfg: CurationConfig, strategy: Optional[Strategy], keep: float,
            seed: int, has_ratings: bool) -> CurationResult:
    from lightning_alchemist.selection.strategies import num_kept

    if strategy is None:
        strategy = Random()
    if strategy.name == "curriculum":
        raise ConfigError("config 'selection': curriculum reorders the whole pool per epoch and cannot pick inside curation "
                          "stages; use another strategy with curation, or curation=none")
    cseed = int(cfg.seed if cfg.seed is not None else seed)
    n = len(ratings)
    target = num_kept(keep, n)
    rows_of, found = embeddings.align(ratings.keys)
    emb_rows = np.flatnonzero(found)  # pool rows (ratings order) that have an embedding
    stage = np.full(n, STAGES.index("no_embedding"), dtype=np.int8)  # codes into STAGES (a dictionary column)
    cluster_id = np.full(n, -1, dtype=np.int32)
    dist = np.full(n, np.nan, dtype=np.float32)
    dup_of = np.full(n, -1, dtype=np.int64)
    if len(emb_rows) == 0:
        raise ConfigError("curation: no pool sample has an embedding; check curation.embeddings (source, path, column)")
    if len(emb_rows) == n and np.array_equal(rows_of, np.arange(n)):
        vectors = embeddings.vectors  # already in the ratings' order: no copy (a memmap stays on disk)
    else:
        vectors = np.asarray(embeddings.vectors[rows_of[emb_rows]], dtype=np.float32)
    k = min(cfg.clusters or auto_clusters(len(emb_rows)), len(emb_rows))
    centroids = fit_kmeans(vectors, k, seed=cseed)
    labels, distances = assign(vectors, centroids)
    cluster_id[emb_rows] = labels
    dist[emb_rows] = distances
    stage[emb_rows] = STAGES.index("selection")
    alive = np.ones(len(emb_rows), dtype=bool)  # over emb_rows
    counts: dict[str, int] = {"pool": n, "no_embedding": int(n - len(emb_rows))}
    quality = _quality_share(cfg, keep) if cfg.budgets and has_ratings else None
    if quality is not None and quality >= 1.0:
        quality = None  # quality_keep=1.0: no filter
    if quality is not None:
        tail = (ratings.ranking or {}).get("tail", "noise")
        if tail != "noise":
            raise ConfigError(f"curation quality filter: the ratings declare their tail '{tail}', not 'noise'; "
                              "set curation.quality_keep=1.0 to budget without the filter")
        passed = quality_filter(ratings, emb_rows, quality)
        alive &= passed
        stage[emb_rows[~passed]] = STAGES.index("quality")
        counts["quality"] = int((~passed).sum())
    else:
        passed = alive.copy()
    seen = int(alive.sum())  # what dedup sees (after the quality filter)
    if cfg.dedup:
        prio = priority(str(cfg.which_to_keep), distances, ratings.ratings[emb_rows] if has_ratings else None, cseed)
        # among the filter's survivors only: a filtered-out copy must not displace its surviving twin
        res = semdedup(vectors, labels, k, cfg.eps, prio, seed=cseed, alive=None if quality is None else alive)
        gone = ~res.keep
        dropped = emb_rows[gone]
        alive &= res.keep
        stage[dropped] = STAGES.index("dedup")
        dup_of[dropped] = emb_rows[res.dup_of[gone]]
        counts["dedup"] = res.dropped
    survivors = emb_rows[alive]
    if cfg.keep_of == "survivors" and seen:
        # keep · N shrunk by the share dedup removed of what it saw: the copies' places are not refilled
        target = min(int(round(target * len(survivors) / seen)), len(survivors))
    want = min(target, len(survivors))
    budgets = None
    complexity = None
    if cfg.budgets:
        sizes = np.bincount(labels[alive], minlength=k)
        # spread measured on every member that passed the quality filter, copies included (a cluster of copies is tight)
        d_intra = intra_distances(labels[passed], distances[passed], k) if quality is not None else intra_distances(labels, distances, k)
        complexity = cluster_complexity(centroids, d_intra, cfg.neighbors)
        budgets = cluster_budgets(sizes, complexity, want, cfg.tau, cfg.floor, standardise=cfg.complexity_scale == "std")
        order, bounds = groups(labels[alive], k)
        chosen = []
        for j in range(k):
            members = survivors[order[bounds[j]:bounds[j + 1]]]
            if cfg.inside == "farthest":
                pick = members[np.argsort(-dist[members], kind="stable")[:budgets[j]]]
            else:
                pick = _pick(strategy, ratings, members, int(budgets[j]), cseed * 1_000_003 + j)
            chosen.append(pick)
        kept_rows = np.sort(np.concatenate(chosen)) if chosen else survivors[:0]
        stage[survivors] = STAGES.index("budget")
        counts["budget"] = int(len(survivors) - len(kept_rows))
    else:
        kept_rows = _pick(strategy, ratings, survivors, want, cseed)
        counts["selection"] = int(len(survivors) - len(kept_rows))
    kept = np.zeros(n, dtype=bool)
    kept[kept_rows] = True
    if not cfg.budgets and len(kept_rows) == len(survivors):
        # nothing was cut after dedup: the last stage that decided is dedup (or none ran)
        stage[kept_rows] = STAGES.index("dedup" if cfg.dedup else "selection")
    counts["kept"] = int(kept.sum())
    weights = rebalance_weights(cluster_id[kept_rows], str(cfg.rebalance), cfg.rebalance_temperature)
    all_weights = np.zeros(n)
    all_weights[kept_rows] = weights
    meta = strategy._meta(ratings, keep, seed, len(kept_rows))
    meta["strategy"] = f"curation:{cfg.name}+{strategy.name}"
    summary = {
        "name": cfg.name, "config": as_container(cfg), "counts": counts, "target": target,
        "short": bool(len(kept_rows) < target), "clusters": k, "mode": cfg.mode,
        "sizes_before": np.bincount(labels, minlength=k).tolist(),
        "sizes_after_dedup": np.bincount(labels[alive], minlength=k).tolist(), "quality_keep": quality,
        "sizes_kept": np.bincount(cluster_id[kept_rows], minlength=k).tolist(),
        "intra_distance": np.round(intra_distances(labels, distances, k), 5).tolist(),
    }
    if budgets is not None:
        summary["budgets"] = budgets.tolist()
        summary["complexity"] = np.round(complexity, 6).tolist()
    meta["curation"] = {key: summary[key] for key in ("name", "counts", "target", "short", "clusters", "mode")}
    meta["curation"]["params"] = cfg.identity()
    meta["curation"]["embeddings"] = {key: val for key, val in embeddings.meta.items() if key != "skipped"}
    selection = Selection(ratings.keys.take(pa.array(kept_rows)), weights, meta, indices=kept_rows)
    keys = ratings.keys
    no_dup = dup_of < 0
    dup_keys = keys.take(pa.array(np.where(no_dup, 0, dup_of), mask=no_dup))  # null where the row is no copy
    provenance = pa.table({
        "key": keys, "cluster": pa.array(cluster_id, type=pa.int32()), "stage": pa.DictionaryArray.from_arrays(pa.array(stage), pa.array(STAGES)),
        "kept": pa.array(kept), "dup_of": dup_keys, "distance": pa.array(dist, type=pa.float32()),
        "weight": pa.array(all_weights, type=pa.float64()),
    })
    return CurationResult(selection, provenance, summary)
