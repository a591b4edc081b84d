"""The rater network: a small transformer over the proxy's :class:`RaterInputs`.

Token features go through self-attention and per-sample cross-attention to the caption's text
states (the official `[0]` cross-attention bug is *not* reproduced), are mean-pooled per sample
and scored by the instance head; the group head reads the batch statistics of the pooled features.
Every per-sample output depends on that sample alone (no batch norm, no cross-sample attention),
so a sample's rating does not change with its batch neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from lightning_alchemist.proxy.base import RaterInputs
from lightning_alchemist.rater.config import NetworkConfig
from lightning_alchemist.rater.heads import GroupHead, InstanceHead

__all__ = ["RaterNetwork", "RaterOutput"]


@dataclass
class RaterOutput:
    """Rater outputs for a batch: instance logits ``[B]``, pooled features ``[B, W]``, group scalar."""

    logits: Tensor
    pooled: Tensor
    group: Optional[Tensor]


class _Block(nn.Module):
    """Pre-LN block: self-attention, cross-attention to text (key-padding masked), MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: Tensor, text: Tensor, text_pad: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.cross_attn(h, text, text, key_padding_mask=text_pad, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class RaterNetwork(nn.Module):
    """Transformer rater with an instance head and an optional group head.

    Args:
        token_dim: channel size C of ``RaterInputs.tokens``.
        text_dim: channel size D of ``RaterInputs.text`` and ``pooled_text``.
        cfg: network sizes.
        group_head: build the group head (False for ``group_head: none``).
    """

    def __init__(self, token_dim: int, text_dim: int, cfg: NetworkConfig, group_head: bool = True) -> None:
        super().__init__()
        w = cfg.width
        self.token_proj = nn.Linear(token_dim, w)
        self.text_proj = nn.Linear(text_dim, w)
        # The pooled caption becomes a start token, as in STAR's SOS.
        self.sos_proj = nn.Linear(text_dim, w)
        self.level_emb = nn.Embedding(cfg.max_levels, w)
        self.blocks = nn.ModuleList(_Block(w, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.instance_head = InstanceHead(w, cfg.head_hidden)
        self.group_head = GroupHead(w, cfg.head_hidden) if group_head else None
        self.max_levels = cfg.max_levels
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)

    def features(self, inputs: RaterInputs) -> Tensor:
        """Mean-pooled per-sample features ``[B, W]``."""
        tokens = inputs.tokens.float()
        x = self.token_proj(tokens)
        if inputs.levels is not None:
            levels = inputs.levels.to(x.device).long().clamp_(0, self.max_levels - 1)
            x = x + self.level_emb(levels).unsqueeze(0)
        sos = self.sos_proj(inputs.pooled_text.float()).unsqueeze(1)
        x = torch.cat([sos, x], dim=1)
        text = self.text_proj(inputs.text.float())
        mask = inputs.text_mask.to(torch.bool)
        # A caption with no valid position (empty/dropped) would give NaN attention; let it attend
        # to its first position instead.
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(dim=1)
        pad = ~mask
        for block in self.blocks:
            x = block(x, text, pad)
        return self.norm(x).mean(dim=1)

    def forward(self, inputs: RaterInputs) -> RaterOutput:
        pooled = self.features(inputs)
        logits = self.instance_head(pooled)
        group = self.group_head(pooled) if self.group_head is not None else None
        return RaterOutput(logits=logits, pooled=pooled, group=group)
