"""``T2IModule``: trains any proxy as a *target* text-to-image model with Lightning.

Checkpoints hold only the parameters that train (``full``: the proxy's trainable module, e.g. the
STAR or FLUX transformer; ``lora``: the adapter weights), the optimiser/scheduler state, the RNG
state of the objective, and the model/finetune configs as hyper-parameters. Frozen parts (the VQ
tokenizer or VAE, text encoders, a LoRA's base weights) are rebuilt from the configs on restore:
seeded random weights, the cached tokenizer, or local checkpoints.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor

from lightning_alchemist.config import as_container
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import Batch, Encoded, T2IProxy, encoded_batch
from lightning_alchemist.proxy.factory import build_proxy, model_config
from lightning_alchemist.proxy.lora import FinetuneConfig, finetune_config

__all__ = ["T2IModule"]


class T2IModule(L.LightningModule):
    """A LightningModule over a :class:`T2IProxy`: mean per-sample loss, ``val/loss``, ``generate``.

    Args:
        model: the ``model`` config node (family schema), used to build the proxy and saved with checkpoints.
        finetune: the ``finetune`` config node (mode and optimiser).
        seed: seeds the training objective's draws (noise, timesteps, caption dropout, drop-path).
        proxy: an already built proxy (then ``model``/``finetune`` are only recorded).
        encode_cache_mb: keep frozen-encoder outputs per sample key in memory up to this size (0 = off);
            valid because the encoders are frozen and the data transforms are deterministic.
        val_seed: validation draws are seeded by ``(val_seed, batch_idx)``, so val losses are comparable across epochs.
    """

    def __init__(self, model: Any = None, finetune: Any = None, seed: int = 0, proxy: Optional[T2IProxy] = None,
                 encode_cache_mb: int = 0, val_seed: int = 1234) -> None:
        super().__init__()
        if model is not None and proxy is None:
            model_config(model)  # one-line errors (e.g. a missing local path) before anything resolves the node
        model_node, ft_node = as_container(model), as_container(finetune)
        self.save_hyperparameters({"model": model_node, "finetune": ft_node, "seed": seed,
                                   "encode_cache_mb": encode_cache_mb, "val_seed": val_seed})
        self.ft: FinetuneConfig = finetune_config(ft_node)
        if proxy is None:
            if model_node is None:
                raise ConfigError("T2IModule needs a 'model' config or a built proxy")
            proxy = build_proxy(model_node, self.ft)
        self.proxy = proxy
        self.seed, self.val_seed = seed, val_seed
        self._gen = torch.Generator().manual_seed(seed)
        self._gen_restored = False
        self._cache: dict[str, dict[str, Tensor]] = {}
        self._cache_bytes, self._cache_limit = 0, int(encode_cache_mb) * 2**20
        # Checkpoints hold only what trains; frozen weights come back from the configs.
        self.strict_loading = False

    # ------------------------------------------------------------------ encoding (+ per-key cache)

    def encode(self, batch: Batch) -> Encoded:
        if batch.get("encoded") or batch.get("features") is not None:  # encoded already (the feature cache)
            return encoded_batch(self.proxy, batch)
        keys = list(batch.get("key") or [])
        # Cached by (key, caption): with caption variants (lightning_alchemist.curation.captions) a key's
        # caption changes from epoch to epoch, and a text encoding cached by key alone would be stale.
        captions = list(batch.get("caption") or [])
        slots = [f"{k}\x1f{c}" for k, c in zip(keys, captions)] if len(captions) == len(keys) else keys
        if not self._cache_limit or not keys or any(k not in self._cache for k in slots):
            enc = self.proxy.encode(batch)
            if self._cache_limit and keys and self._cache_bytes < self._cache_limit:
                for i, k in enumerate(slots):
                    row = {n: v[i].detach().cpu() for n, v in enc.items() if isinstance(v, Tensor)}
                    self._cache[k] = row
                    self._cache_bytes += sum(t.numel() * t.element_size() for t in row.values())
            return enc
        rows = [self._cache[k] for k in slots]
        out: Encoded = {n: torch.stack([r[n] for r in rows]).to(self.device) for n in rows[0]}
        out["key"] = keys
        return out

    def on_fit_start(self) -> None:
        # The frozen encoders (VQ tokenizer / VAE, text encoder) stay in eval mode on purpose while the
        # transformer trains; Lightning would warn about them right after this hook.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        # Each DDP rank draws its own noise/timesteps/dropout (same seed, different stream per rank),
        # unless the stream was just restored from a checkpoint.
        if not self._gen_restored and self.global_rank:
            self._gen.manual_seed(self.seed * 1_000_003 + self.global_rank)

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Batch) -> Tensor:
        """Per-sample losses ``[B]`` of a batch (no caption dropout)."""
        return self.proxy.per_sample_loss(self.encode(batch), generator=self._gen)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        enc = self.encode(batch)
        B = len(batch["caption"])
        if self.ft.caption_dropout > 0:
            drop = torch.rand(B, generator=self._gen) < self.ft.caption_dropout
            enc = self.proxy.drop_captions(enc, drop.to(self.device))
        loss = self.proxy.per_sample_loss(enc, generator=self._gen).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.val_seed * 100_003 + batch_idx)
        losses = self.proxy.per_sample_loss(self.encode(batch), generator=gen)
        self.log("val/loss", losses.mean(), prog_bar=True, batch_size=losses.shape[0], on_epoch=True, sync_dist=True)
        return losses

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for name, p in self.proxy.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or "pos_start" in name or "lvl_embed" in name or "scale_mul" in name
            (no_decay if skip else decay).append(p)
        if not decay and not no_decay:
            raise ConfigError("nothing to train: every proxy parameter is frozen (check finetune.mode and target_modules)")
        groups = [{"params": decay, "weight_decay": self.ft.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.ft.lr, betas=tuple(self.ft.betas))
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1000
        warm, kind, floor = self.ft.warmup_steps, self.ft.schedule, self.ft.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if kind == "constant":
                return 1.0
            frac = min((step - warm) / max(total - warm, 1), 1.0)
            shape = 0.5 * (1 + math.cos(math.pi * frac)) if kind == "cosine" else 1 - frac
            return floor + (1 - floor) * shape

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = {f"proxy.{n}" for n, p in self.proxy.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["t2i_generator"] = self._gen.get_state()
        checkpoint["t2i_finetune_mode"] = str(self.ft.mode)  # a plain string: weights_only loading takes no Enum

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = set(self.state_dict())
        unexpected = [k for k in checkpoint.get("state_dict", {}) if k not in own]
        if unexpected:
            raise ConfigError(f"checkpoint does not match the model: {len(unexpected)} unknown keys, e.g. '{unexpected[0]}' "
                              "(was it written with another model or finetune config?)")
        # Frozen weights were left out on save: keep this module's own (rebuilt from the configs).
        checkpoint["state_dict"] = {**self.state_dict(), **checkpoint.get("state_dict", {})}
        if "t2i_generator" in checkpoint:
            self._gen.set_state(checkpoint["t2i_generator"])
            self._gen_restored = True

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate(self, prompts: list[str], seed: int = 0, **kwargs: Any) -> Tensor:
        """Images ``[N,3,H,W]`` in [-1,1] (STAR: next-scale sampling with CFG; FLUX: Euler flow sampling)."""
        gen = torch.Generator(device=self.device).manual_seed(seed)  # multinomial needs a same-device generator
        return self.proxy.generate(list(prompts), generator=gen, **kwargs)
