"""The Alchemist rater: network, meta-gradient training (``RaterModule``) and scoring to Parquet.

- :class:`RaterModule`: proxy + rater trained together (manual optimisation), scoring in ``predict``;
- :class:`RaterDataModule` / :class:`PairedLoader`: one validation pass per epoch, the pool cycling;
- :func:`score` with :class:`RatingWriter`: one atomic ``<shard>.parquet`` per pool shard, resumable,
  on 1 or N devices; :func:`load_rater` rebuilds a trained rater (and its proxy) from ``rater.ckpt``.
"""

from lightning_alchemist.rater.config import NetworkConfig, OptimConfig, RaterConfig, ScoreConfig, rater_config
from lightning_alchemist.rater.data import RaterDataModule
from lightning_alchemist.rater.fingerprint import scoring_fingerprint
from lightning_alchemist.rater.heads import GroupHead, InstanceHead, batch_weights, weight_entropy
from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.meta import FirstOrder, MetaContext, MetaGradient, Penalty, Unrolled, build_meta_gradient
from lightning_alchemist.rater.module import RaterModule, infer_rater_dims
from lightning_alchemist.rater.network import RaterNetwork, RaterOutput
from lightning_alchemist.rater.progress import ScoringProgressBar
from lightning_alchemist.rater.scoring import load_rater, score
from lightning_alchemist.rater.writer import RatingWriter, finished_shards

__all__ = [
    "FirstOrder",
    "GroupHead",
    "InstanceHead",
    "MetaContext",
    "MetaGradient",
    "NetworkConfig",
    "OptimConfig",
    "PairedLoader",
    "Penalty",
    "RaterConfig",
    "RaterDataModule",
    "RaterModule",
    "RaterNetwork",
    "RaterOutput",
    "RatingWriter",
    "ScoreConfig",
    "ScoringProgressBar",
    "Unrolled",
    "batch_weights",
    "build_meta_gradient",
    "finished_shards",
    "infer_rater_dims",
    "load_rater",
    "rater_config",
    "score",
    "scoring_fingerprint",
    "weight_entropy",
]
