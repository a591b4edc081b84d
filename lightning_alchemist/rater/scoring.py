"""Loading a trained rater and scoring a dataset into ``ratings/`` (distributed and resumable).

``score`` runs ``Trainer.predict`` with a :class:`RatingWriter`: one Parquet file per pool shard.
It works unchanged on one device, on N devices (``devices=N, strategy="ddp"``) and on many nodes
(``num_nodes=M`` under SLURM's ``srun`` or ``torchrun``; Lightning reads the cluster environment).
Every rank scores whole shards (shard i -> rank i % world) and writes its own files, so ranks never
communicate. A rerun with the same rater and config skips the shards already written.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import lightning.pytorch as pl
import torch

from lightning_alchemist.errors import AlchemistError
from lightning_alchemist.proxy.base import T2IProxy
from lightning_alchemist.rater.fingerprint import scoring_fingerprint
from lightning_alchemist.rater.module import RaterModule
from lightning_alchemist.rater.progress import ScoringProgressBar
from lightning_alchemist.rater.signals import RANKING_KEY
from lightning_alchemist.rater.writer import RatingWriter, finished_shards

__all__ = ["build_proxy_from_spec", "load_rater", "score"]

log = logging.getLogger(__name__)


def build_proxy_from_spec(spec: Optional[Mapping[str, Any]]) -> T2IProxy:
    """Rebuild a proxy from a checkpoint's ``proxy_spec`` ``{"model": ..., "finetune": ...}``.

    A model node with a ``class`` key (``{"class": "pkg.mod.Class", "kwargs": {...}}``) imports and
    calls that class (a user's own proxy); any other goes through the package's proxy factory.
    """
    if not spec or not spec.get("model"):
        raise AlchemistError("rater checkpoint has no proxy_spec: pass the proxy explicitly, load_rater(path, proxy=...)")
    model = dict(spec["model"])
    if "class" in model:
        module_name, _, cls_name = str(model["class"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError, ValueError) as err:
            raise AlchemistError(f"proxy class '{model['class']}' cannot be imported ({err}); check model.class") from None
        return cls(**dict(model.get("kwargs") or {}))
    try:
        from lightning_alchemist.proxy.factory import build_proxy  # issue 3: the proxy factory
    except ImportError as err:
        raise AlchemistError(f"cannot build the proxy: lightning_alchemist.proxy.factory is unavailable ({err})") from None
    return build_proxy(model, spec.get("finetune"))


def load_rater(path: str | Path, proxy: Optional[T2IProxy] = None, map_location: Any = "cpu") -> pl.LightningModule:
    """A :class:`RaterModule` from ``rater.ckpt`` (or a :class:`~lightning_alchemist.rater.direct.ProxyScorer`
    when the checkpoint is a direct-scoring one); the proxy is rebuilt from the checkpoint unless given."""
    path = Path(path)
    if not path.is_file():
        raise AlchemistError(f"rater checkpoint '{path}' not found: train one with recipes/train_rater.py out=DIR (writes DIR/rater.ckpt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    from lightning_alchemist.rater.direct import ProxyScorer, is_scorer_checkpoint

    if is_scorer_checkpoint(ckpt):  # rater.score_with=proxy: the warmed-up proxy scores directly
        return ProxyScorer.from_checkpoint(ckpt, proxy=proxy)
    if proxy is None:
        proxy = build_proxy_from_spec((ckpt.get("hyper_parameters") or {}).get("proxy_spec"))
    return RaterModule.load_from_checkpoint(str(path), map_location=map_location, proxy=proxy, weights_only=False)


def _data_signature(datamodule: Any) -> dict[str, Any]:
    """What of the data config changes a sample's rating (preprocessing), for the fingerprint."""
    cfg = getattr(datamodule, "cfg", None)
    sig: dict[str, Any] = {}
    for name in ("image_size",):
        if cfg is not None and hasattr(cfg, name):
            sig[name] = getattr(cfg, name)
    return sig


def score(
    rater: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    ratings_dir: str | Path,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
    callbacks: Optional[list[pl.Callback]] = None,
) -> dict[str, Any]:
    """Score every pool sample of ``datamodule`` into ``ratings_dir`` (one Parquet per shard).

    ``rater`` is a :class:`RaterModule` or a :class:`~lightning_alchemist.rater.direct.ProxyScorer`
    (direct scoring by the warmed-up proxy). The files carry the objective's ranking ends
    (:data:`~lightning_alchemist.rater.signals.RANKING_KEY`) for the selection to follow.
    The datamodule must follow the ``T2IDataModule`` predict contract (whole shards per rank,
    ``skip_shards``). Returns ``{"fingerprint", "skipped_shards", "written_shards", "rows"}`` of
    this rank.
    """
    ratings_dir = Path(ratings_dir)
    store_batch = rater.cfg.score.store_batch_rating
    signature = dict(rater.scoring_signature()) if hasattr(rater, "scoring_signature") else {}
    batch_dependent = store_batch or signature.get("direct") == "contrast"  # contrast pairs captions within a batch
    fp = scoring_fingerprint(
        rater,
        data=_data_signature(datamodule),
        score={"store_batch_rating": store_batch, **signature,
               **({"store_embedding": True} if getattr(rater.cfg.score, "store_embedding", False) else {}),
               **({"batch_size": getattr(getattr(datamodule, "cfg", None), "batch_size", None)} if batch_dependent else {})},
    )
    done = finished_shards(ratings_dir, fp, overwrite=overwrite)
    if hasattr(datamodule, "skip_shards"):
        datamodule.skip_shards = set(done)
    expected = {}
    if hasattr(datamodule, "pool_shards"):
        expected = {s.stem: s.num_samples for s in datamodule.pool_shards()}
    ends = getattr(rater, "ends", None)
    writer = RatingWriter(ratings_dir, fp, expected=expected, skip=done, metadata={RANKING_KEY: ends.to_json().encode()} if ends else None)
    kwargs = {"accelerator": "auto", "devices": 1, "logger": False, "enable_model_summary": False}
    kwargs.update(trainer_kwargs or {})
    from lightning_alchemist.callbacks.progress import progress_settings

    show_bar, lines = progress_settings(kwargs.get("enable_progress_bar", True), name="scoring")
    kwargs["enable_progress_bar"] = show_bar
    bar = [ScoringProgressBar()] if show_bar else lines
    trainer = pl.Trainer(callbacks=[writer, *bar, *(callbacks or [])], **kwargs)
    if done:
        log.info("scoring: %d shards already rated with fingerprint %s are skipped", len(done), fp)
    trainer.predict(rater, datamodule=datamodule, return_predictions=False)
    return {"fingerprint": fp, "skipped_shards": sorted(done), "written_shards": list(writer.written), "rows": writer.rows_written}
