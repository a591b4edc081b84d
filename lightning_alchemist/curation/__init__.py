"""Curation beyond one score: embeddings, near-duplicate removal, concept-cluster budgets, rebalancing;
caption variants in :mod:`.captions` (imported on use).

Imports only ``selection`` and ``data`` (never the rater or proxy models); scikit-learn's k-means is
imported when a clustering runs. :func:`~lightning_alchemist.curation.plan.curate` chains the stages.
"""

from lightning_alchemist.curation.budgets import Rebalance, cluster_budgets, cluster_complexity, rebalance_weights
from lightning_alchemist.curation.clusters import Clustering, assign, auto_clusters, cluster, fit_kmeans
from lightning_alchemist.curation.dedup import DedupResult, KeepRule, priority, semdedup
from lightning_alchemist.curation.embeddings import (
    Embeddings,
    EmbeddingsConfig,
    embeddings_from_ratings,
    load_sidecar,
    pool_embeddings,
    thumbnail_embeddings,
)
from lightning_alchemist.curation.plan import CurationConfig, CurationResult, Inside, curate, curation_config

__all__ = [
    "Clustering",
    "CurationConfig",
    "CurationResult",
    "DedupResult",
    "Embeddings",
    "EmbeddingsConfig",
    "Inside",
    "KeepRule",
    "Rebalance",
    "assign",
    "auto_clusters",
    "cluster",
    "cluster_budgets",
    "cluster_complexity",
    "curate",
    "curation_config",
    "embeddings_from_ratings",
    "fit_kmeans",
    "load_sidecar",
    "pool_embeddings",
    "priority",
    "rebalance_weights",
    "semdedup",
    "thumbnail_embeddings",
]
