"""Multi-scale residual VQ-VAE (the VAR/STAR image tokenizer), re-implemented.

Module and parameter names follow the official ``VQVAE`` (LDM-style ``encoder.*``/``decoder.*``,
``quant_conv``, ``post_quant_conv``, ``quantize.{embedding, quant_resi.qresi_ls.K, ema_vocab_hit_SV}``)
so a real ``vae_ch160v4096z32.pth`` loads with ``strict=True`` when built with ``ch=160,
ch_mult=(1,1,2,2,4), num_res_blocks=2, vocab_size=4096, z_channels=32``.

Quantiser semantics (VAR ``VectorQuantizer2``): one codebook shared by all scales, L2 nearest
neighbour; per scale the residual is area-downsampled to ``pn x pn``, quantised, embedded,
bicubic-upsampled back, passed through a partially shared ``Phi`` (3x3 conv blended 0.5/0.5 with
identity) and added to ``f_hat``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError

__all__ = ["VQConfig", "MultiScaleVQVAE", "VectorQuantizer2"]


@dataclass
class VQConfig:
    """Schema of ``model.tokenizer`` (STAR/VAR multi-scale VQ-VAE).

    ``image_size / 2**(len(ch_mult)-1)`` must equal ``patch_nums[-1]`` (the latent grid side).
    ``checkpoint``: a local state dict to load (``strict=True``); ``None`` = the cached tiny tokenizer
    trained on first use when ``auto_train`` is true, else random weights. It trains on a sample of
    the pool of ``train_data`` (a ``data`` config node, set from the run's ``data`` by
    :func:`lightning_alchemist.proxy.factory.fit_to_data`); ``None`` or ``shapes`` = the embedded ``shapes``.
    """

    vocab_size: int = 128
    z_channels: int = 8
    ch: int = 16
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    num_res_blocks: int = 1
    using_sa: bool = False
    using_mid_sa: bool = True
    norm_groups: int = 8  # the official VQVAE uses 32
    dropout: float = 0.0
    beta: float = 0.25
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    patch_nums: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    checkpoint: Optional[str] = None
    auto_train: bool = True
    # tokenizer training (recipes/train_tokenizer.py)
    train_steps: int = 1600
    train_batch_size: int = 32
    train_lr: float = 2e-3
    train_samples: int = 4000
    seed: int = 0
    train_data: Optional[dict[str, Any]] = None  # the data config node to fit on; None: the embedded shapes


_NORM_GROUPS = [32]  # set per model build (official: 32); a module-level default keeps the LDM block signatures


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=_NORM_GROUPS[-1], num_channels=ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1x1 ``qkv`` conv (official naming)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.C = ch
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj_out(out.transpose(1, 2).reshape(B, C, H, W))


class Downsample2x(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attn(ch: int, on: bool) -> nn.Module:
    return AttnBlock(ch) if on else nn.Identity()


class MidBlock(nn.Module):
    """ResNet → (attention) → ResNet at the bottleneck (official keys ``block_1``, ``attn_1``, ``block_2``)."""

    def __init__(self, ch: int, dropout: float, using_mid_sa: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, dropout)
        self.attn_1 = _attn(ch, using_mid_sa)
        self.block_2 = ResnetBlock(ch, ch, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Level(nn.Module):
    """One resolution: ResNet blocks, each followed by attention when ``attn``, then an optional resample.

    Official keys: ``block.i``, ``attn.i`` and ``downsample``/``upsample`` (``resample_name``).
    """

    def __init__(self, block_in: int, block_out: int, num_blocks: int, dropout: float, attn: bool,
                 resample_name: Optional[str] = None, resample: Optional[type] = None) -> None:
        super().__init__()
        self.block, self.attn = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_blocks):
            self.block.append(ResnetBlock(block_in, block_out, dropout))
            block_in = block_out
            if attn:
                self.attn.append(AttnBlock(block_in))
        self.resample_name = resample_name
        if resample_name:
            setattr(self, resample_name, resample(block_in))

    def forward(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return getattr(self, self.resample_name)(h) if self.resample_name else h


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float, z_channels: int,
                 using_sa: bool, using_mid_sa: bool, in_channels: int = 3) -> None:
        super().__init__()
        n = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList(
            Level(ch * in_mult[lvl], ch * ch_mult[lvl], num_res_blocks, dropout, attn=lvl == n - 1 and using_sa,
                  resample_name="downsample" if lvl != n - 1 else None, resample=Downsample2x)
            for lvl in range(n)
        )
        block_in = ch * ch_mult[-1]
        self.mid = MidBlock(block_in, dropout, using_mid_sa)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for down in self.down:
            h = down(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float, z_channels: int,
                 using_sa: bool, using_mid_sa: bool, in_channels: int = 3) -> None:
        super().__init__()
        n = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = MidBlock(block_in, dropout, using_mid_sa)
        ups: list[nn.Module] = []
        for lvl in reversed(range(n)):
            ups.insert(0, Level(block_in, ch * ch_mult[lvl], num_res_blocks + 1, dropout, attn=lvl == n - 1 and using_sa,
                                resample_name="upsample" if lvl != 0 else None, resample=Upsample2x))
            block_in = ch * ch_mult[lvl]
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, in_channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for up in reversed(self.up):
            h = up(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """Residual 3x3 conv blended with identity: ``(1-r)·h + r·conv(h)``."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(ratio)

    def forward(self, h: Tensor) -> Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul(self.resi_ratio)


class PhiPartiallyShared(nn.Module):
    """K Phis shared across scales; scale ``si`` of ``SN`` uses the one whose tick is nearest ``si/(SN-1)``."""

    def __init__(self, phis: list[Phi]) -> None:
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)
        K = len(phis)
        self.ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)

    def __getitem__(self, at_from_0_to_1: float) -> Phi:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at_from_0_to_1)))]


class VectorQuantizer2(nn.Module):
    """Multi-scale residual quantiser with one shared codebook (VAR semantics)."""

    def __init__(self, vocab_size: int, Cvae: int, beta: float, patch_nums: Sequence[int], quant_resi: float, share_quant_resi: int) -> None:
        super().__init__()
        self.vocab_size, self.Cvae, self.beta = vocab_size, Cvae, beta
        self.v_patch_nums = tuple(patch_nums)
        if share_quant_resi < 1:
            raise ConfigError("config 'model.tokenizer.share_quant_resi': use >= 1 (the official value is 4)")
        self.quant_resi = PhiPartiallyShared([Phi(Cvae, quant_resi) for _ in range(share_quant_resi)])
        self.embedding = nn.Embedding(vocab_size, Cvae)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.v_patch_nums), vocab_size))

    def _phi(self, si: int) -> Phi:
        SN = len(self.v_patch_nums)
        return self.quant_resi[si / (SN - 1) if SN > 1 else 0.0]

    def _nearest(self, z_NC: Tensor) -> Tensor:
        emb = self.embedding.weight
        d = z_NC.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * z_NC @ emb.t()
        return d.argmin(1)

    def forward(self, f_BChw: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Training pass: straight-through ``f_hat``, the VQ loss, and the index maps ``[B, pn²]``."""
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        SN = len(self.v_patch_nums)
        vq_loss = f_BChw.new_zeros(())
        idx_list = []
        for si, pn in enumerate(self.v_patch_nums):
            last = si == SN - 1
            rest = f_rest if last else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self._nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            with torch.no_grad():
                self.ema_vocab_hit_SV[si].mul_(0.97).add_(idx.bincount(minlength=self.vocab_size).float(), alpha=0.03)
            h = self.embedding(idx.view(B, pn, pn)).permute(0, 3, 1, 2)
            if not last:
                h = F.interpolate(h, size=(H, W), mode="bicubic")
            h = self._phi(si)(h)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            vq_loss = vq_loss + F.mse_loss(f_hat.detach(), f_BChw) * self.beta + F.mse_loss(f_hat, f_no_grad)
            idx_list.append(idx.view(B, pn * pn))
        vq_loss = vq_loss / SN
        f_hat = (f_hat.detach() - f_no_grad) + f_BChw  # straight-through to the encoder
        return f_hat, vq_loss, idx_list

    @torch.no_grad()
    def f_to_idx(self, f_BChw: Tensor) -> list[Tensor]:
        """Index maps ``[B, pn²]`` per scale (``f_to_idxBl_or_fhat`` with ``to_fhat=False``)."""
        B, C, H, W = f_BChw.shape
        f_rest = f_BChw.detach().clone()
        SN = len(self.v_patch_nums)
        out = []
        for si, pn in enumerate(self.v_patch_nums):
            last = si == SN - 1
            rest = f_rest if last else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self._nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            h = self.embedding(idx.view(B, pn, pn)).permute(0, 3, 1, 2)
            if not last:
                h = F.interpolate(h, size=(H, W), mode="bicubic")
            f_rest = f_rest - self._phi(si)(h)
            out.append(idx.view(B, pn * pn))
        return out

    def idx_to_var_input(self, idx_list: Sequence[Tensor]) -> Tensor:
        """Teacher-forcing input ``[B, L - pn0², Cvae]``: ``f_hat`` after each scale, area-downsampled to the next scale."""
        B = idx_list[0].shape[0]
        C, H, SN = self.Cvae, self.v_patch_nums[-1], len(self.v_patch_nums)
        f_hat = idx_list[0].new_zeros(B, C, H, H, dtype=self.embedding.weight.dtype)
        nxt = []
        for si in range(SN - 1):
            pn = self.v_patch_nums[si]
            h = self.embedding(idx_list[si]).transpose(1, 2).reshape(B, C, pn, pn)
            f_hat = f_hat + self._phi(si)(F.interpolate(h, size=(H, H), mode="bicubic"))
            pn_next = self.v_patch_nums[si + 1]
            nxt.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").reshape(B, C, -1).transpose(1, 2))
        return torch.cat(nxt, dim=1)

    def next_input(self, si: int, f_hat: Tensor, h_BChw: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling: add scale ``si``'s codes (``h_BChw`` at ``pn x pn``) to ``f_hat``; return it and the next input."""
        H, SN = self.v_patch_nums[-1], len(self.v_patch_nums)
        if si != SN - 1:
            f_hat = f_hat + self._phi(si)(F.interpolate(h_BChw, size=(H, H), mode="bicubic"))
            pn = self.v_patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat = f_hat + self._phi(si)(h_BChw)
        return f_hat, f_hat

    def idx_to_fhat(self, idx_list: Sequence[Tensor]) -> Tensor:
        """Sum of all scales' contributions ``[B, Cvae, H, W]``."""
        B = idx_list[0].shape[0]
        C, H = self.Cvae, self.v_patch_nums[-1]
        f_hat = idx_list[0].new_zeros(B, C, H, H, dtype=self.embedding.weight.dtype)
        for si, pn in enumerate(self.v_patch_nums):
            h = self.embedding(idx_list[si]).transpose(1, 2).reshape(B, C, pn, pn)
            f_hat, _ = self.next_input(si, f_hat, h)
        return f_hat


class MultiScaleVQVAE(nn.Module):
    """The STAR/VAR tokenizer: ``img_to_idx``, ``idx_to_var_input``, ``fhat_to_img``; images in [-1, 1]."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        g = cfg.norm_groups
        if g < 1 or cfg.ch % g or any(cfg.ch * m % g for m in cfg.ch_mult):
            raise ConfigError(f"config 'model.tokenizer.ch': {cfg.ch} x ch_mult must be multiples of norm_groups={g}")
        if sorted(cfg.patch_nums) != list(cfg.patch_nums) or len(cfg.patch_nums) < 2:
            raise ConfigError(f"config 'model.tokenizer.patch_nums': {cfg.patch_nums} must be increasing with at least 2 scales")
        self.cfg = cfg
        self.Cvae, self.vocab_size = cfg.z_channels, cfg.vocab_size
        self.downsample = 2 ** (len(cfg.ch_mult) - 1)
        self.patch_nums = tuple(cfg.patch_nums)
        dd = dict(ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res_blocks=cfg.num_res_blocks, dropout=cfg.dropout,
                  z_channels=cfg.z_channels, using_sa=cfg.using_sa, using_mid_sa=cfg.using_mid_sa)
        _NORM_GROUPS.append(cfg.norm_groups)
        try:
            self.encoder = Encoder(**dd)
            self.decoder = Decoder(**dd)
        finally:
            _NORM_GROUPS.pop()
        self.quantize = VectorQuantizer2(cfg.vocab_size, cfg.z_channels, cfg.beta, cfg.patch_nums, cfg.quant_resi, cfg.share_quant_resi)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)
        self.reset_parameters()

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    def reset_parameters(self) -> None:
        """Explicit init (the official builder leaves the VQVAE uninitialised and expects a checkpoint)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        V = self.vocab_size
        nn.init.uniform_(self.quantize.embedding.weight, -1 / V, 1 / V)

    def check_image(self, img: Tensor) -> None:
        if img.shape[-1] != self.image_size or img.shape[-2] != self.image_size:
            raise ConfigError(
                f"image size {tuple(img.shape[-2:])} does not match the tokenizer ({self.image_size} px = "
                f"patch_nums[-1] {self.patch_nums[-1]} x downsample {self.downsample}); set data.image_size={self.image_size}"
            )

    def encode_f(self, img: Tensor) -> Tensor:
        return self.quant_conv(self.encoder(img))

    @torch.no_grad()
    def img_to_idx(self, img: Tensor) -> list[Tensor]:
        self.check_image(img)
        return self.quantize.f_to_idx(self.encode_f(img))

    def fhat_to_img(self, f_hat: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Training: reconstruction (unclamped), VQ loss, index maps."""
        f_hat, vq_loss, idx = self.quantize(self.encode_f(img))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, idx

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        # As the official loader: a hit table with another number of scales is replaced, not an error.
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def token_count(patch_nums: Sequence[int]) -> int:
    return int(sum(p * p for p in patch_nums))


def levels(patch_nums: Sequence[int]) -> Tensor:
    """Scale index of each of the ``L`` tokens."""
    return torch.cat([torch.full((p * p,), i, dtype=torch.long) for i, p in enumerate(patch_nums)])

