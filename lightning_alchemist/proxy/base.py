"""The proxy interface: the one seam between text-to-image models and the Alchemist method.

A proxy turns a data batch into frozen-encoder outputs once (:meth:`T2IProxy.encode`; cacheable
per key), computes the *true* per-sample training loss on them (:meth:`T2IProxy.per_sample_loss`),
and exposes what a rater reads (:meth:`T2IProxy.rater_inputs`). STAR and FLUX implement it; a
user's own model can too.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

Batch = dict[str, Any]
"""A collated data batch: ``key`` (list[str]), ``image`` (float [B,C,H,W] in [-1, 1]),
``caption`` (list[str]), ``meta`` (list[dict]), ``shard`` (list[str])."""

Encoded = dict[str, Any]
"""Frozen-encoder outputs of a batch; batch-first tensors plus ``key`` (list[str])."""


def attention_context(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, run ``scaled_dot_product_attention`` with the math kernel.

    The CPU flash kernel has no double backward, which the meta-gradient variants (hypergradients
    through an inner step) need; at proxy sizes that run on CPU the math kernel is as fast.
    """
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


@dataclass
class RaterInputs:
    """What a rater reads for a batch of B samples.

    Attributes:
        tokens: image token features ``[B, L, C]`` (STAR: teacher-forcing VQ features; FLUX: packed latents).
        text: caption text states ``[B, T, D]``.
        text_mask: ``[B, T]`` bool, True where a text position is a real token.
        pooled_text: pooled caption embedding ``[B, D]``.
        levels: optional ``[L]`` long tensor, the scale index of each token (scale-wise models).
    """

    tokens: Tensor
    text: Tensor
    text_mask: Tensor
    pooled_text: Tensor
    levels: Optional[Tensor] = None


class T2IProxy(nn.Module, ABC):
    """Base class of proxy text-to-image models."""

    @abstractmethod
    def encode(self, batch: Batch) -> Encoded:
        """Run the frozen encoders (image tokenizer/VAE, text encoder) on a batch, without grad."""

    @abstractmethod
    def per_sample_loss(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        """The per-sample training loss, shape ``[B]``; batched values equal one-at-a-time values.

        ``generator`` fixes any randomness of the objective (noise, timesteps) so that two passes
        over the same batch see identical draws.
        """

    @abstractmethod
    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        """The rater's view of the batch (frozen-encoder features only, no proxy activations)."""

    # ---- optional hooks (concrete defaults), used by T2IModule, LoRA and checkpointing ----

    #: Name of the child module that trains (the rest is frozen); LoRA wraps it, checkpoints keep it.
    trainable_attr: str = ""
    #: Default LoRA target module names (suffix match) inside the trainable module.
    lora_targets: tuple[str, ...] = ()
    #: Child modules that stay frozen: kept in eval mode whatever ``train()`` is asked (no dropout,
    #: no norm-statistics updates), so encoder outputs are deterministic and cacheable.
    frozen_attrs: tuple[str, ...] = ()

    def train(self, mode: bool = True) -> "T2IProxy":
        super().train(mode)
        for name in self.frozen_attrs:
            getattr(self, name).eval()
        return self

    @property
    def trainable(self) -> nn.Module:
        """The module that trains (STAR transformer, FLUX transformer)."""
        if not self.trainable_attr:
            raise NotImplementedError(f"{type(self).__name__} does not name its trainable module (trainable_attr)")
        return getattr(self, self.trainable_attr)

    def to_features(self, encoded: Encoded) -> dict[str, Tensor]:
        """What the feature cache stores of an encoded batch: batch-first tensors ``[B, ...]``.

        The default keeps every batch-first tensor of ``encoded``; a proxy whose encodes hold parts
        derived cheaply from others (STAR: the teacher-forcing input from the token ids) stores less.
        """
        keys = encoded.get("key")
        n = len(keys) if keys is not None else None
        out = {}
        for name, value in encoded.items():
            if isinstance(value, Tensor) and value.ndim >= 1 and (n is None or value.shape[0] == n):
                out[name] = value
        return out

    def from_features(self, features: dict[str, Tensor]) -> Encoded:
        """An ``Encoded`` batch from stored :meth:`to_features` tensors (on this proxy's device)."""
        return dict(features)

    def null_text(self, batch_size: int) -> dict[str, Tensor]:
        """Text entries (``text``, ``text_mask``, ``pooled``) of the empty caption, for CFG and caption dropout."""
        raise NotImplementedError(f"{type(self).__name__} has no empty-caption encoding")

    def drop_captions(self, encoded: Encoded, drop: Tensor) -> Encoded:
        """A copy of ``encoded`` whose samples where ``drop`` [B] is True see the empty caption."""
        if not bool(drop.any()):
            return encoded
        null = self.null_text(int(drop.shape[0]))
        out = dict(encoded)
        for name, value in null.items():
            sel = drop.to(value.device).view(-1, *([1] * (value.ndim - 1)))
            out[name] = torch.where(sel, value.to(encoded[name].dtype), encoded[name])
        return out

    def generate(self, prompts: list[str], generator: Optional[torch.Generator] = None, **kwargs: Any) -> Tensor:
        """Sample images ``[N, 3, H, W]`` in [-1, 1] for ``prompts``."""
        raise NotImplementedError(f"{type(self).__name__} cannot generate images")


def encoded_batch(proxy: T2IProxy, batch: Batch) -> Encoded:
    """The proxy's encodes of a data batch, without running the encoders when the batch brings them.

    A batch marked ``encoded`` (e.g. rows of an encoded split) passes through; a batch read from the
    feature cache (``batch["features"]``, see :mod:`lightning_alchemist.features`) is expanded by
    :meth:`T2IProxy.from_features`; any other batch runs :meth:`T2IProxy.encode` without grad.
    """
    if batch.get("encoded"):
        return batch
    features = batch.get("features")
    if features is not None:
        with torch.no_grad():
            enc = dict(proxy.from_features(features))
        enc["key"] = list(batch.get("key") or [])
        return enc
    with torch.no_grad():
        return proxy.encode(batch)
