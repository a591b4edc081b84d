"""The rater's heads and the batch weighting (multi-granularity perception).

The instance head gives each pooled sample feature a raw logit φ_i (the rating). The group head
reads the batch's mean and variance of pooled features and gives one scalar per batch; how it
combines with φ is :func:`batch_weights`'s ``group_head`` mode (method.md §2.5, §8 A3/A4).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["GroupHead", "InstanceHead", "batch_weights", "weight_entropy"]


class InstanceHead(nn.Module):
    """Pooled feature ``[B, W]`` -> raw logit ``[B]`` (no sigmoid: the logit is the rating)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, 1))

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled).squeeze(-1)


class GroupHead(nn.Module):
    """Batch ``[B, W]`` -> one pre-activation scalar from ``[mean_B, var_B]`` of the pooled features."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, pooled: Tensor) -> Tensor:
        mean = pooled.mean(dim=0)
        var = pooled.var(dim=0, unbiased=False) if pooled.shape[0] > 1 else torch.zeros_like(mean)
        return self.net(torch.cat([mean, var])).squeeze(-1)


def batch_weights(
    logits: Tensor, group: Optional[Tensor], mode: str = "temperature", legacy_alchemist: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-sample weights of one (per-device) batch, and the batch temperature τ_B (for logging).

    Args:
        logits: instance logits φ ``[B]``.
        group: the group head's pre-activation scalar, or None (mode ``none``).
        mode: ``temperature``: w = softmax_B(τ_B φ), τ_B = 2 sigmoid(g) (sums to 1);
            ``product``: the paper's literal softmax_B(φ) · sigmoid(g) (sums to sigmoid(g));
            ``none``: softmax_B(φ).
        legacy_alchemist: the official code's softmax_B(softmax_B(sigmoid(φ)) · sigmoid(g)).
    """
    one = logits.new_ones(())
    if legacy_alchemist:
        gate = torch.sigmoid(group) if group is not None else one
        inner = torch.softmax(torch.sigmoid(logits), dim=0) * gate
        return torch.softmax(inner, dim=0), gate
    if mode == "none" or group is None:
        return torch.softmax(logits, dim=0), one
    if mode == "temperature":
        tau = 2.0 * torch.sigmoid(group)
        return torch.softmax(tau * logits, dim=0), tau
    if mode == "product":
        gate = torch.sigmoid(group)
        return torch.softmax(logits, dim=0) * gate, gate
    raise ValueError(f"unknown group_head mode '{mode}'")


def weight_entropy(weights: Tensor) -> Tensor:
    """Entropy of the batch weights normalised by log B: 1 = uniform, 0 = one sample takes all."""
    b = weights.shape[0]
    if b < 2:
        return weights.new_ones(())
    p = weights / weights.sum().clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum() / torch.log(torch.tensor(float(b)))
