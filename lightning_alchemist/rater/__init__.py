"""The Alchemist rater: network, meta-gradient training (``RaterModule``) and scoring to Parquet.

- :class:`RaterModule`: proxy + rater trained together (manual optimisation), scoring in ``predict``;
- objectives (:mod:`~lightning_alchemist.rater.signals`): the official rule, regression, caption contrast,
  penalty; each declares its ranking ends (:class:`RankingEnds`) for the selection to follow;
- :func:`warm_up_proxy` (cached proxy warm-up on the validation split) and :class:`ProxyScorer` (direct
  scoring by the warmed-up proxy, the default), on encodes computed once (:func:`cached_encodes`);
- :class:`RaterDataModule` / :class:`PairedLoader`: one validation pass per epoch, the pool cycling;
- :func:`score` with :class:`RatingWriter`: one atomic ``<shard>.parquet`` per pool shard, resumable,
  on 1 or N devices; :func:`load_rater` rebuilds a trained rater (and its proxy) from ``rater.ckpt``.
"""

from lightning_alchemist.rater.config import NetworkConfig, OptimConfig, RaterConfig, ScoreConfig, rater_config
from lightning_alchemist.rater.data import RaterDataModule
from lightning_alchemist.rater.detail import DetailReference, detail_penalty, detail_share
from lightning_alchemist.rater.direct import ProxyScorer
from lightning_alchemist.rater.encodes import EncodedLoader, EncodedSet, cached_encodes
from lightning_alchemist.rater.fingerprint import scoring_fingerprint
from lightning_alchemist.rater.heads import GroupHead, InstanceHead, batch_weights, weight_entropy
from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.meta import FirstOrder, MetaContext, MetaGradient, Penalty, Unrolled, build_meta_gradient
from lightning_alchemist.rater.module import RaterModule, infer_rater_dims
from lightning_alchemist.rater.network import RaterNetwork, RaterOutput
from lightning_alchemist.rater.progress import ScoringProgressBar
from lightning_alchemist.rater.scoring import load_rater, score
from lightning_alchemist.rater.signals import OBJECTIVE_ENDS, RankingEnds, proxy_signal
from lightning_alchemist.rater.warmup import WarmupConfig, WarmupResult, warm_up_proxy
from lightning_alchemist.rater.writer import RatingWriter, finished_shards

__all__ = [
    "OBJECTIVE_ENDS",
    "DetailReference",
    "detail_penalty",
    "detail_share",
    "EncodedLoader",
    "EncodedSet",
    "ProxyScorer",
    "RankingEnds",
    "WarmupConfig",
    "WarmupResult",
    "cached_encodes",
    "proxy_signal",
    "warm_up_proxy",
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
