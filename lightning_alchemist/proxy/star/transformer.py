"""The STAR next-scale transformer (VAR with text cross-attention), re-implemented.

Parameter names follow the official ``VAR`` (STAR variant) so real checkpoints load with
``strict=True`` where shapes match: ``pos_start``, ``word_embed``, ``class_emb`` (an unused VAR
leftover, kept frozen for key parity), ``lvl_embed``, ``head_logits``, ``encoder_proj`` and
``blocks.i.{attn, cross_attn, ffn}``. Init is explicit (never a process-wide patch).

Differences from the official code, on purpose: cross-attention is per sample (the official block
adds ``cross_attn(...)[0]``, batch element 0's output, to every sample; ``legacy_cross_attn_bug``
reproduces it), and projections are called as modules so LoRA can wrap them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import attention_context

__all__ = ["StarTransformerConfig", "StarTransformer", "rope_2d_normalised", "block_causal_bias"]


@dataclass
class StarTransformerConfig:
    """Schema of ``model.transformer``. ``width``/``heads`` default to the official ``64·depth`` and ``depth``."""

    depth: int = 2
    width: Optional[int] = None
    heads: Optional[int] = None
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    drop_path_rate: Optional[float] = None  # None = official 0.1·depth/24
    attn_l2_norm: bool = True
    rope_theta: float = 10000.0
    rope_norm: float = 64.0
    num_classes: int = 1000  # only sizes the unused class_emb (VAR leftover)
    legacy_cross_attn_bug: bool = False
    checkpoint: Optional[str] = None  # a local STAR/VAR checkpoint (trainer['var_wo_ddp'] or a plain state dict)


def rope_2d_normalised(patch_nums: Sequence[int], head_dim: int, theta: float, norm: float) -> tuple[Tensor, Tensor]:
    """Axial 2-D RoPE with per-scale coordinates rescaled to ``[0, norm]``: ``(cos, sin)`` of shape ``[L, head_dim/2]``.

    Half the rotary pairs rotate with the column (x) coordinate, half with the row (y); frequencies
    ``1/theta^(k/head_dim)`` for ``k = 0, 4, 8, …``.
    """
    if head_dim % 4:
        raise ConfigError(f"config 'model.transformer': head dim {head_dim} must be a multiple of 4 for 2-D RoPE")
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 4, dtype=torch.float64)[: head_dim // 4] / head_dim)
    angles = []
    for pn in patch_nums:
        t = torch.arange(pn, dtype=torch.float64)
        if pn > 1:
            t = t / t.max() * norm
        ys, xs = torch.meshgrid(t, t, indexing="ij")
        ang = torch.cat([torch.outer(xs.flatten(), freqs), torch.outer(ys.flatten(), freqs)], dim=-1)
        angles.append(ang)
    a = torch.cat(angles).float()
    return a.cos(), a.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive pairs of the last dim of ``x [B,H,L,hd]`` by the angles of ``[L, hd/2]``."""
    x2 = x.float().unflatten(-1, (-1, 2))
    x0, x1 = x2[..., 0], x2[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


def block_causal_bias(patch_nums: Sequence[int]) -> Tensor:
    """``[L, L]`` additive mask: a token of scale i sees every token of scales ≤ i."""
    lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(patch_nums)])
    allowed = lvl[None, :] <= lvl[:, None]
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class _DropPath(nn.Module):
    """Stochastic depth; the per-sample keep mask can come from an explicit generator."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        if self.p <= 0 or not self.training:
            return x
        keep = 1 - self.p
        gdev = generator.device if generator is not None else x.device
        mask = (torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator, device=gdev) < keep).to(x.device)
        return x * mask.to(x.dtype) / keep


class _ScaledAttention(nn.Module):
    """What self- and cross-attention share: heads, the softmax scale, and optional q/k L2-norm
    with a learnable per-head multiplier (``scale_mul_1H11``, the official name)."""

    def __init__(self, C: int, heads: int, l2_norm: bool, drop: float) -> None:
        super().__init__()
        self.C, self.H, self.hd = C, heads, C // heads
        self.l2_norm = l2_norm
        if l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.hd)
        self.drop = drop

    def _normalise_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            k = F.normalize(k, dim=-1)
        return q, k


class SelfAttention(_ScaledAttention):
    def __init__(self, C: int, heads: int, l2_norm: bool, drop: float) -> None:
        super().__init__(C, heads, l2_norm, drop)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: Tensor, bias: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, L, C = x.shape
        qkv = self.mat_qkv(x) + torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        q, k, v = qkv.view(B, L, 3, self.H, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self._normalise_qk(q, k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.drop if self.training else 0.0, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class CrossAttention(_ScaledAttention):
    def __init__(self, C: int, C_text: int, heads: int, l2_norm: bool, drop: float) -> None:
        super().__init__(C, heads, l2_norm, drop)
        self.mat_q = nn.Linear(C, C, bias=False)
        self.mat_kv = nn.Linear(C_text, 2 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        B, L, C = x.shape
        T = text.shape[1]
        q = (self.mat_q(x) + self.q_bias).view(B, L, self.H, self.hd).transpose(1, 2)
        kv = self.mat_kv(text) + torch.cat((self.zero_k_bias, self.v_bias))
        k, v = kv.view(B, T, 2, self.H, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self._normalise_qk(q, k)
        mask = text_mask[:, None, None, :].to(torch.bool)  # per-sample key padding
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.drop if self.training else 0.0, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.fc2 = nn.Linear(hidden, C)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))


class AttnBlock(nn.Module):
    """Pre-norm (non-affine LN) self-attn → cross-attn → FFN, each with a residual."""

    def __init__(self, C: int, C_text: int, heads: int, mlp_ratio: float, l2_norm: bool, drop: float, drop_path: float, legacy_bug: bool) -> None:
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(C, heads, l2_norm, drop)
        self.cross_attn = CrossAttention(C, C_text, heads, l2_norm, drop)
        self.ffn = FFN(C, round(C * mlp_ratio), drop)
        self.drop_path = _DropPath(drop_path)
        self.legacy_bug = legacy_bug

    def forward(self, x: Tensor, bias: Tensor, cos: Tensor, sin: Tensor, text: Tensor, text_mask: Tensor,
                generator: Optional[torch.Generator] = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.ln_wo_grad(x), bias, cos, sin), generator)
        ca = self.cross_attn(self.ln_wo_grad(x), text, text_mask)
        if self.legacy_bug:  # official behaviour: every sample gets sample 0's cross-attention output
            ca = ca[0].unsqueeze(0).expand_as(ca)
        x = x + self.drop_path(ca, generator)
        return x + self.drop_path(self.ffn(self.ln_wo_grad(x)), generator)


class StarTransformer(nn.Module):
    """Next-scale prediction over ``L = Σ pn²`` tokens, conditioned on text states and pooled text."""

    def __init__(self, cfg: StarTransformerConfig, vocab_size: int, Cvae: int, C_text: int, C_pooled: int, patch_nums: Sequence[int]) -> None:
        super().__init__()
        depth = cfg.depth
        C = cfg.width if cfg.width is not None else 64 * depth
        H = cfg.heads if cfg.heads is not None else depth
        if depth < 1 or C % H or (C // H) % 4:
            raise ConfigError(f"config 'model.transformer': width {C} must split into {H} heads of a multiple-of-4 size")
        self.cfg, self.C, self.H, self.depth = cfg, C, H, depth
        self.V, self.Cvae = vocab_size, Cvae
        self.patch_nums = tuple(patch_nums)
        self.L = sum(p * p for p in patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        dpr = cfg.drop_path_rate if cfg.drop_path_rate is not None else 0.1 * depth / 24
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.word_embed = nn.Linear(Cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.class_emb.requires_grad_(False)  # unused (VAR leftover), kept for state-dict parity
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.encoder_proj = nn.Linear(C_pooled, C)
        self.blocks = nn.ModuleList(
            AttnBlock(C, C_text, H, cfg.mlp_ratio, cfg.attn_l2_norm, cfg.drop_rate, dpr * i / max(depth - 1, 1), cfg.legacy_cross_attn_bug)
            for i in range(depth)
        )
        self.logit_norm = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.head_logits = nn.Linear(C, vocab_size)
        # Derived tables: plain (non-persistent) buffers, not state-dict keys (as in the official code).
        cos, sin = rope_2d_normalised(self.patch_nums, C // H, cfg.rope_theta, cfg.rope_norm)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("attn_bias", block_causal_bias(self.patch_nums), persistent=False)
        self.register_buffer("lvl_1L", torch.cat([torch.full((p * p,), i) for i, p in enumerate(self.patch_nums)]), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Official ``init_weights``: trunc-normal std √(1/3C), head ×0.02, proj/fc2 ÷ √(2·depth)."""
        std = math.sqrt(1 / self.C / 3)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_start, std=std)
        with torch.no_grad():
            self.head_logits.weight.mul_(0.02)
            for b in self.blocks:
                b.attn.proj.weight.div_(math.sqrt(2 * self.depth))
                b.cross_attn.proj.weight.div_(math.sqrt(2 * self.depth))
                b.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))

    def forward(self, teacher: Tensor, text: Tensor, text_mask: Tensor, pooled: Tensor,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Logits ``[B, l, V]`` for the first ``l = first_l + teacher.shape[1]`` tokens (any scale prefix)."""
        B = pooled.shape[0]
        sos = self.encoder_proj(pooled).unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start
        x = torch.cat([sos, self.word_embed(teacher)], dim=1) if teacher.shape[1] else sos
        ell = x.shape[1]
        x = x + self.lvl_embed(self.lvl_1L[:ell])
        bias = self.attn_bias[:ell, :ell]
        cos, sin = self.rope_cos[:ell], self.rope_sin[:ell]
        with attention_context(x.device):
            for block in self.blocks:
                x = block(x, bias, cos, sin, text, text_mask, generator)
        return self.head_logits(self.logit_norm(x))

    def no_weight_decay(self) -> set[str]:
        """Parameter names the official optimiser excludes from weight decay."""
        return {n for n, p in self.named_parameters() if n.startswith(("pos_", "lvl_embed")) or "scale_mul" in n or p.ndim <= 1}
