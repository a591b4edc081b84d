"""Direct scoring: the frozen warmed-up proxy rates every pool sample itself (no amortisation).

Where the pool is small enough to run the proxy over it once (the cost of one proxy epoch, times
``1 + partners`` forwards for the caption contrast), the proxy's own per-sample signal is a better
rating than a rater network trained to imitate it (issue 15: the amortised raters never learned
the caption signal). :class:`ProxyScorer` is a ``LightningModule`` whose ``predict_step`` writes
that signal through the same :class:`~lightning_alchemist.rater.writer.RatingWriter` contract as
:class:`~lightning_alchemist.rater.module.RaterModule`, so :func:`~lightning_alchemist.rater.scoring.score`
runs it unchanged (devices, shards, resume). The contrast pairs captions within a predict batch:
the predict loader's batches are fixed (file order), so ratings are reproducible for a batch size.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zlib
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning.pytorch as pl
import torch

from lightning_alchemist.errors import DataError
from lightning_alchemist.proxy.base import Batch, T2IProxy
from lightning_alchemist.rater.config import RaterConfig, rater_config
from lightning_alchemist.rater.detail import CHECKS, DetailReference, image_statistics, robust_penalty
from lightning_alchemist.rater.module import encode_batch
from lightning_alchemist.rater.signals import RankingEnds, ends_of, proxy_signal


def _trainable(proxy: T2IProxy) -> torch.nn.Module:
    try:
        return proxy.trainable
    except NotImplementedError:
        return proxy

__all__ = ["CHECKPOINT_KIND", "ProxyScorer", "is_scorer_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "lightning_alchemist.proxy_scorer"


def is_scorer_checkpoint(ckpt: Any) -> bool:
    """True for a loaded ``rater.ckpt`` written by :meth:`ProxyScorer.save` (direct scoring)."""
    return isinstance(ckpt, dict) and ckpt.get("kind") == CHECKPOINT_KIND


def pooled_features(inputs: Any) -> torch.Tensor:
    """A per-sample embedding from what the proxy's frozen encoders give the rater (``RaterInputs``): the mean image
    token and the pooled caption, each L2-normalised, side by side (``[B, C + D]``; for curation's clusters)."""
    image = torch.nn.functional.normalize(inputs.tokens.float().mean(dim=1), dim=-1)
    text = torch.nn.functional.normalize(inputs.pooled_text.float(), dim=-1)
    return torch.cat([image, text], dim=-1)


class ProxyScorer(pl.LightningModule):
    """Scores samples with the (warmed-up, frozen) proxy's objective signal; higher = keep.

    Args:
        proxy: the warmed-up proxy (frozen here).
        cfg: the ``rater`` config: ``objective``, ``contrast_beta``, ``contrast_partners``, ``seed``, and each
            image check's ``<check>_weight`` and ``<check>_threshold`` (``detail``, ``noise``, ``empty``).
        reference: the pool-trained reference proxy (``objective: penalty``).
        info: the warm-up's results; ``info["image_checks"]`` (``{check: DetailReference dict}`` of the
            validation split; a checkpoint from before it has ``info["detail"]`` alone) turns each image check
            on whose weight is > 0.
    """

    def __init__(self, proxy: T2IProxy, cfg: Union[RaterConfig, dict, Any] = None, reference: Optional[T2IProxy] = None,
                 proxy_spec: Optional[dict] = None, info: Optional[dict] = None) -> None:
        super().__init__()
        self.proxy_spec = proxy_spec
        self.info = dict(info or {})  # the warm-ups' results, kept in the checkpoint for the report
        self.cfg = rater_config(cfg)
        if self.cfg.objective == "official":
            # The official rule has no per-sample signal of its own beyond −ℓ; name it what it is.
            self.cfg = dataclasses.replace(self.cfg, objective="regression")
        self.proxy = proxy.requires_grad_(False).eval()
        self.reference = reference.requires_grad_(False).eval() if reference is not None else None
        if self.cfg.objective == "penalty" and reference is None:
            from lightning_alchemist.errors import ConfigError

            raise ConfigError("config 'rater.objective=penalty' scores with the reference proxy: pass reference=... (a pool warm-up)")
        self.ends: RankingEnds = ends_of(self.cfg.objective)
        # name -> (reference, threshold, weight) of the image checks on; a check without a reference (a checkpoint
        # from before it) or with weight 0 is off: ratings without its penalty.
        refs = dict(self.info.get("image_checks") or {})
        if not refs and self.info.get("detail"):
            refs = {"detail": self.info["detail"]}
        self.checks: dict[str, tuple[DetailReference, float, float]] = {}
        for name in CHECKS:
            ref, weight = DetailReference.from_dict(refs.get(name)), float(getattr(self.cfg, f"{name}_weight"))
            if ref is not None and weight > 0:
                self.checks[name] = (ref, float(getattr(self.cfg, f"{name}_threshold")), weight)
                if ref.version != CHECKS[name].version:
                    # still usable (the statistic of clean images moves little between versions), but not exact
                    log.warning("rater checkpoint: the '%s' check's reference was measured with version %d of its "
                                "statistic, this code computes version %d; retrain the rater for an exact reference",
                                name, ref.version, CHECKS[name].version)

    @property
    def detail(self) -> Optional[DetailReference]:
        """The native-detail check's reference, when that check is on."""
        return self.checks["detail"][0] if "detail" in self.checks else None

    # ----------------------------------------------------------------------------- checkpoint
    def save(self, path: str | Path) -> Path:
        """Write ``rater.ckpt``: config, proxy spec and the warmed-up trainable weights (the frozen
        encoders are rebuilt from the spec), so :func:`~lightning_alchemist.rater.scoring.load_rater`
        returns this scorer and the scoring stage runs unchanged."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "kind": CHECKPOINT_KIND,
            "version": 1,
            "cfg": dataclasses.asdict(self.cfg),
            "proxy_spec": self.proxy_spec,
            "proxy": _trainable(self.proxy).state_dict(),
            "reference": _trainable(self.reference).state_dict() if self.reference is not None else None,
            "info": self.info,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_checkpoint(cls, ckpt: dict, proxy: Optional[T2IProxy] = None) -> "ProxyScorer":
        """Rebuild from a loaded :meth:`save` blob (the proxy from its spec unless given)."""
        from lightning_alchemist.rater.scoring import build_proxy_from_spec

        proxy = proxy if proxy is not None else build_proxy_from_spec(ckpt.get("proxy_spec"))
        _trainable(proxy).load_state_dict(ckpt["proxy"])
        reference = None
        if ckpt.get("reference") is not None:
            reference = build_proxy_from_spec(ckpt.get("proxy_spec"))
            _trainable(reference).load_state_dict(ckpt["reference"])
        return cls(proxy, ckpt["cfg"], reference=reference, proxy_spec=ckpt.get("proxy_spec"), info=ckpt.get("info"))

    def train(self, mode: bool = True) -> "ProxyScorer":
        # Always eval: a scorer never trains (no dropout, frozen norms).
        return super().train(False)

    @property
    def needs_images(self) -> bool:
        """Whether scoring reads the decoded images (the image checks), not only cached encoder features."""
        return bool(self.checks)

    def scoring_signature(self) -> dict[str, Any]:
        """What besides the weights changes a rating (part of the scoring fingerprint)."""
        sig: dict[str, Any] = {"direct": self.cfg.objective}
        if self.cfg.objective == "contrast":
            sig.update(beta=self.cfg.contrast_beta, partners=self.cfg.contrast_partners, null=self.cfg.contrast_null,
                       draws="by_keys")
        for name, (ref, threshold, weight) in self.checks.items():
            sig.update({name: ref.as_dict(), f"{name}_weight": weight, f"{name}_threshold": threshold,
                        f"{name}_version": CHECKS[name].version})
        return sig

    def _generators(self, batch_idx: int, keys: Optional[Sequence[str]] = None):
        # Seeded by the batch's keys when known: the same ratings whichever shards a resumed run still scores
        # and however many ranks share them (a batch index restarts with both).
        ident = zlib.crc32("\x1f".join(map(str, keys)).encode()) if keys else batch_idx
        base = (self.cfg.seed * 1_000_003 + ident) * 16

        def make(i: int) -> torch.Generator:
            return torch.Generator(device=self.device).manual_seed(base + i)

        return make

    def rate_encoded(self, encoded: dict[str, Any], batch_idx: int = 0, stats: Optional[dict[str, torch.Tensor]] = None,
                     keys: Optional[Sequence[str]] = None) -> torch.Tensor:
        """Ratings ``[B]`` of one encoded batch; ``stats`` (:func:`~lightning_alchemist.rater.detail.image_statistics`
        of its images) applies the image checks that are on; the caption partners' random streams come from
        ``keys`` (else from ``batch_idx``)."""
        rating = proxy_signal(self.cfg.objective, self.proxy, encoded, beta=self.cfg.contrast_beta,
                              partners=self.cfg.contrast_partners, null=self.cfg.contrast_null, reference=self.reference,
                              generator=self._generators(batch_idx, keys))
        for name, (ref, threshold, weight) in self.checks.items():
            if stats is not None and name in stats:
                pen = robust_penalty(stats[name].to(rating.device), ref, CHECKS[name].side, threshold, weight)
                rating = rating - pen.to(rating.dtype)
        return rating

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"key", "shard", "rating"}`` for one batch.

        The encodes come from the batch when it brings them (``features`` read from the cache, or ``encoded``),
        else from the proxy's frozen encoders; the image checks that are on read the batch's decoded ``image``
        (a cached batch carries it when served ``with_images``).
        """
        keys = list(batch["key"])
        image = batch.get("image")
        if self.checks and not isinstance(image, torch.Tensor):
            raise DataError(f"the scorer's image checks ({', '.join(self.checks)}) read the images, but this batch has "
                            "none (cached features?): score with features.use=off, or set rater.<check>_weight=0")
        enc = encode_batch(self.proxy, batch)
        stats = image_statistics(image, self.checks) if self.checks else None
        out = {"key": keys, "shard": list(batch["shard"]), "rating": self.rate_encoded(enc, batch_idx, stats, keys=keys).float().cpu()}
        if getattr(self.cfg.score, "store_embedding", False):
            out["embedding"] = pooled_features(self.proxy.rater_inputs(enc)).float().cpu()
        return out
