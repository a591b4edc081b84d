"""``RaterModule``: the proxy and the rater trained together with manual optimisation, and scoring.

One training step takes a pool batch and a validation batch (``{"pool": ..., "val": ...}``, see
:class:`~lightning_alchemist.rater.loader.PairedLoader`):

1. the proxy's per-sample losses ℓ (pool) and ℓ_val at θ_k; the rater's weights w on the pool;
2. rater loss: the objective's loss (``official``: the meta-gradient variant's loss of w; the others:
   the logit regressed onto the batch-standardised signal, see :mod:`~lightning_alchemist.rater.signals`),
   from detached losses, so it reaches only the rater;
3. proxy loss: α·mean(ℓ_val) + (1−α)·Σ w_i ℓ_i with w detached (it reaches only the proxy);
4. penalty only: the reference proxy's loss Σ w_i ℓ_i(θ̂);
5. one backward of their sum, a clip and a step per model (each with its own AdamW and schedule).

Scoring (``predict_step``) returns each sample's raw instance logit, a batch-independent rating.
Batches may come pre-encoded (:meth:`~lightning_alchemist.rater.encodes.EncodedSet.take` marks them
``encoded``), so the frozen encoders run once per split instead of once per step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_alchemist.config import as_container
from lightning_alchemist.proxy.base import Batch, RaterInputs, T2IProxy, encoded_batch
from lightning_alchemist.rater.config import OptimConfig, RaterConfig, rater_config
from lightning_alchemist.rater.heads import batch_weights, weight_entropy
from lightning_alchemist.rater.meta import MetaContext, build_meta_gradient, weighted_pool_loss
from lightning_alchemist.rater.network import RaterNetwork
from lightning_alchemist.rater.schedule import alpha_at, lr_factor
from lightning_alchemist.rater.signals import ends_of, proxy_signal, regression_loss

__all__ = ["RaterModule", "encode_batch", "infer_rater_dims", "spearman"]


def encode_batch(proxy: T2IProxy, batch: Batch) -> dict[str, Any]:
    """The proxy's encodes of ``batch``; a batch already encoded (``batch["encoded"]``) passes through and one
    read from the feature cache is expanded (:func:`~lightning_alchemist.proxy.base.encoded_batch`)."""
    return encoded_batch(proxy, batch)


def infer_rater_dims(proxy: T2IProxy, batch: Batch) -> tuple[int, int]:
    """``(token_dim, text_dim)`` of the proxy's rater inputs, read off one batch."""
    with torch.no_grad():
        inputs = proxy.rater_inputs(proxy.encode(batch))
    return int(inputs.tokens.shape[-1]), int(inputs.text.shape[-1])


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by order)."""
    ra = torch.argsort(torch.argsort(a)).double()
    rb = torch.argsort(torch.argsort(b)).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom > 0 else float("nan")


def _param_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on >=2-D weights only (official), none on biases and norms."""
    decay = [p for _, p in params if p.requires_grad and p.ndim >= 2]
    rest = [p for _, p in params if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _detach_inputs(inputs: RaterInputs) -> RaterInputs:
    def cpu(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.detach().cpu()

    return RaterInputs(cpu(inputs.tokens), cpu(inputs.text), cpu(inputs.text_mask), cpu(inputs.pooled_text), cpu(inputs.levels))  # type: ignore[arg-type]


class RaterModule(pl.LightningModule):
    """The Alchemist rater trained with a proxy by meta-gradients; scores data in ``predict``.

    Args:
        proxy: the proxy model (not saved in hyperparameters; rebuilt from ``proxy_spec`` on load).
        token_dim: channel size of ``RaterInputs.tokens`` (see :func:`infer_rater_dims`).
        text_dim: channel size of ``RaterInputs.text``.
        cfg: the ``rater`` config (dataclass, dict or DictConfig).
        proxy_spec: how to rebuild the proxy when loading a checkpoint: ``{"model": ..., "finetune": ...}``
            for the proxy factory, or ``{"class": "pkg.mod.Class", "kwargs": {...}}``.
        reference: the frozen pool-trained reference proxy of the ``penalty`` objective (training
            only: not saved, the trained rater scores without it).
    """

    def __init__(
        self,
        proxy: T2IProxy,
        token_dim: int,
        text_dim: int,
        cfg: Union[RaterConfig, dict, Any] = None,
        proxy_spec: Optional[dict] = None,
        reference: Optional[T2IProxy] = None,
    ) -> None:
        super().__init__()
        self.cfg = rater_config(cfg)
        self.save_hyperparameters(
            {
                "token_dim": token_dim,
                "text_dim": text_dim,
                "cfg": as_container(self.cfg),
                "proxy_spec": proxy_spec,
            }
        )
        self.automatic_optimization = False
        self.proxy = proxy
        self.rater = RaterNetwork(token_dim, text_dim, self.cfg.network, group_head=self.cfg.group_head != "none")
        self.meta = build_meta_gradient(self.cfg, proxy)
        # A plain attribute, not a submodule: the reference stays out of checkpoints and optimisers.
        self.__dict__["reference"] = reference.requires_grad_(False).eval() if reference is not None else None
        self.ends = ends_of(self.cfg.objective)
        self.alpha = alpha_at(0, self.cfg)
        self._probe: list[RaterInputs] = []
        self._probe_count = 0
        self._probe_prev: Optional[Tensor] = None

    def on_fit_start(self) -> None:
        # Checked here, not in __init__: a trained penalty rater is loaded and scores without its reference.
        if self.cfg.objective == "penalty" and self.reference is None:
            from lightning_alchemist.errors import ConfigError

            raise ConfigError("config 'rater.objective=penalty' needs the pool-trained reference proxy: pass reference=... "
                              "(warm_up_proxy on the pool encodes with role='pool')")

    # ----------------------------------------------------------------------------- weights
    def weights(self, inputs: RaterInputs) -> tuple[Tensor, Tensor, Tensor]:
        """``(w [B], logits [B], tau)`` of one batch under the configured group-head mode."""
        out = self.rater(inputs)
        w, tau = batch_weights(out.logits, out.group, self.cfg.group_head, self.cfg.legacy_alchemist_weights)
        return w, out.logits, tau

    def rate(self, inputs: RaterInputs) -> Tensor:
        """Batch-independent ratings: the raw instance logit of each sample ``[B]``."""
        return self.rater(inputs).logits

    # ----------------------------------------------------------------------------- optimisers
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        def adamw(named: list[tuple[str, nn.Parameter]], oc: OptimConfig) -> torch.optim.Optimizer:
            groups = _param_groups(named, oc.weight_decay)
            if not groups:  # a fully frozen model still needs an optimiser slot
                groups = [{"params": [nn.Parameter(torch.zeros(1, device=self.device))], "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=oc.lr, betas=tuple(oc.betas))

        opts = [
            adamw(list(self.proxy.named_parameters()), self.cfg.proxy_optim),
            adamw(list(self.rater.named_parameters()), self.cfg.rater_optim),
        ]
        ref = self.meta.reference_parameters()
        if ref:
            opts.append(adamw([(str(i), p) for i, p in enumerate(ref)], self.cfg.proxy_optim))
        return opts

    def _step_index(self, batch_idx: int) -> tuple[int, float, float]:
        per_epoch = float(self.trainer.num_training_batches)
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else math.inf
        total = per_epoch * max_epochs if math.isfinite(per_epoch) else math.inf
        return int(self.current_epoch * (per_epoch if math.isfinite(per_epoch) else 0) + batch_idx), total, per_epoch

    def _set_lrs(self, opts: list[Any], batch_idx: int) -> None:
        step, total, per_epoch = self._step_index(batch_idx)
        configs = [self.cfg.proxy_optim, self.cfg.rater_optim, self.cfg.proxy_optim]
        for opt, oc in zip(opts, configs):
            factor = lr_factor(step, total, per_epoch if math.isfinite(per_epoch) else 1.0, oc)
            for group in opt.optimizer.param_groups if hasattr(opt, "optimizer") else opt.param_groups:
                group["lr"] = oc.lr * factor

    def _generators(self, batch_idx: int):
        base = (self.cfg.seed * 1_000_003 + self.current_epoch * 100_003 + batch_idx) * 16
        device = self.device

        def make(i: int) -> torch.Generator:
            return torch.Generator(device=device).manual_seed(base + i)

        return make

    # ----------------------------------------------------------------------------- training
    @property
    def proxy_frozen(self) -> bool:
        """The proxy does not train (``freeze_proxy``: official fixVar; the rater stage sets it after a
        warm-up with ``frozen`` continuation)."""
        return self.cfg.freeze_proxy

    def on_train_epoch_start(self) -> None:
        self.alpha = alpha_at(self.current_epoch, self.cfg)

    def on_train_start(self) -> None:
        # A run resumed mid-epoch skips that epoch's on_train_epoch_start: alpha must follow the restored epoch.
        self.alpha = alpha_at(self.current_epoch, self.cfg)

    def step_losses(self, batch: dict[str, Batch], batch_idx: int = 0) -> dict[str, Any]:
        """The step's losses at θ_k, on disjoint parameter sets: ``rater`` (the variant's loss of
        w(φ), from losses detached), ``proxy`` (α·mean ℓ_val + (1−α)·Σ w_i ℓ_i with w detached),
        ``reference`` (penalty only, else None), plus values to log."""
        gen = self._generators(batch_idx)
        proxy = self.proxy
        enc_pool = encode_batch(proxy, batch["pool"])
        enc_val = encode_batch(proxy, batch["val"])
        loss_pool = proxy.per_sample_loss(enc_pool, generator=gen(0))
        loss_val = proxy.per_sample_loss(enc_val, generator=gen(8))
        inputs = proxy.rater_inputs(enc_pool)
        self._collect_probe(inputs)

        w, logits, tau = self.weights(inputs)
        ctx = MetaContext(proxy=proxy, pool=enc_pool, val=enc_val, pool_loss=loss_pool.detach(), generator=gen)
        if self.cfg.objective == "official":
            rater_loss = self.meta.rater_loss(w, ctx)
        else:
            # Regression onto the batch-standardised signal: every sample's logit gets a gradient
            # (the softmax rule's gradient on a logit is ∝ its weight, which collapses; issue 15).
            signal = proxy_signal(self.cfg.objective, proxy, enc_pool, beta=self.cfg.contrast_beta,
                                  partners=self.cfg.contrast_partners, null=self.cfg.contrast_null, reference=self.reference, generator=gen,
                                  losses=loss_pool.detach())
            rater_loss = regression_loss(logits, signal)
        entropy = weight_entropy(w)
        if self.cfg.entropy_weight > 0 and self.cfg.objective == "official":  # a fix of the softmax rule's collapse
            rater_loss = rater_loss - self.cfg.entropy_weight * entropy
        wd = w.detach()  # the proxy trains on the rater's pre-update weights, no gradient into φ
        val_term = loss_val.mean()
        proxy_loss = self.alpha * val_term + (1.0 - self.alpha) * weighted_pool_loss(wd, loss_pool, self.cfg.legacy_mean_over_batch)
        return {
            "rater": rater_loss,
            "proxy": proxy_loss,
            "reference": self.meta.reference_loss(wd, ctx),
            "val_term": val_term.detach(),
            "pool_loss": loss_pool.detach(),
            "logits": logits.detach(),
            "tau": tau.detach(),
            "entropy": entropy.detach(),
        }

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        opts = self.optimizers()
        opts = list(opts) if isinstance(opts, (list, tuple)) else [opts]
        self._set_lrs(opts, batch_idx)
        out = self.step_losses(batch, batch_idx)
        # One backward of the sum: the three losses touch disjoint parameters (rater, proxy,
        # reference), so each model gets exactly its own loss's gradient. A single backward per
        # step is also what DDP requires (two backwards through one forward fail there).
        updates = [(opts[1], self.cfg.rater_optim.clip)]
        total = out["rater"]
        if not self.proxy_frozen:
            total = total + out["proxy"]
            updates.append((opts[0], self.cfg.proxy_optim.clip))
        if out["reference"] is not None and len(opts) > 2:
            total = total + out["reference"]
            updates.append((opts[2], self.cfg.proxy_optim.clip))
        for opt, _ in updates:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        for opt, clip in updates:
            if clip > 0:
                self.clip_gradients(opt, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            opt.step()

        bs = int(out["pool_loss"].shape[0])
        logs = {
            "train/proxy_loss": out["proxy"].detach(),
            "train/rater_loss": out["rater"].detach(),
            "train/val_loss": out["val_term"],
            "train/pool_loss": out["pool_loss"].mean(),
            "train/alpha": float(self.alpha),
            "train/tau": out["tau"].float().mean(),
            "train/weight_entropy": out["entropy"],
            "train/logit_std": out["logits"].float().std() if bs > 1 else torch.zeros(()),
        }
        if out["reference"] is not None:
            logs["train/reference_loss"] = out["reference"].detach()
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=bs)
        self.log("val_loss", out["val_term"], prog_bar=True, on_step=True, on_epoch=False, batch_size=bs)
        return out["proxy"].detach()

    # ----------------------------------------------------------------------------- probe
    def _collect_probe(self, inputs: RaterInputs) -> None:
        if self._probe_count >= self.cfg.probe_size:
            return
        take = min(self.cfg.probe_size - self._probe_count, int(inputs.tokens.shape[0]))
        cut = RaterInputs(
            inputs.tokens[:take], inputs.text[:take], inputs.text_mask[:take], inputs.pooled_text[:take], inputs.levels
        )
        self._probe.append(_detach_inputs(cut))
        self._probe_count += take

    def probe_ratings(self) -> Optional[Tensor]:
        """Current ratings of the fixed probe set (the first ``probe_size`` pool samples seen)."""
        if not self._probe:
            return None
        was_training = self.rater.training
        self.rater.eval()
        with torch.no_grad():
            out = [self.rate(RaterInputs(*(None if t is None else t.to(self.device) for t in dataclasses.astuple(p)))).cpu() for p in self._probe]
        self.rater.train(was_training)
        return torch.cat(out)

    def on_train_epoch_end(self) -> None:
        ratings = self.probe_ratings()
        if ratings is None:
            return
        if self._probe_prev is not None and len(self._probe_prev) > 1:
            # The probe is append-only until full: compare the samples both epochs rated.
            n = len(self._probe_prev)
            self.log("train/probe_rank_corr", spearman(self._probe_prev, ratings[:n]), on_epoch=True, prog_bar=True, sync_dist=True)
        self._probe_prev = ratings

    # ----------------------------------------------------------------------------- scoring
    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"key", "shard", "rating"}`` (+ ``rating_batch`` if configured) for one batch."""
        enc = encode_batch(self.proxy, batch)
        out = self.rater(self.proxy.rater_inputs(enc))
        result: dict[str, Any] = {
            "key": list(batch["key"]),
            "shard": list(batch["shard"]),
            "rating": out.logits.float().cpu(),
        }
        if getattr(self.cfg.score, "store_embedding", False):
            result["embedding"] = out.pooled.float().cpu()
        if self.cfg.score.store_batch_rating:
            w, _ = batch_weights(out.logits, out.group, self.cfg.group_head, self.cfg.legacy_alchemist_weights)
            result["rating_batch"] = w.float().cpu()
        return result
