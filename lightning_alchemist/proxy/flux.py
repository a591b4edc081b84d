"""``FluxProxy``: diffusers ``FluxTransformer2DModel`` + ``AutoencoderKL`` with the flow-matching
objective of diffusers' FLUX training examples (``train_dreambooth_(lora_)flux.py``).

Per sample: ``u`` from the timestep density (``weighting_scheme``), ``σ = sigmas[(u·1000)]``,
``x_t = (1−σ)·z + σ·ε``, 2×2 latent packing, guidance embedding (``guidance_scale``) when the
transformer has one, velocity target ``ε − z``, loss = mean over (C,H,W) of ``w(σ)·(v̂ − v)²``.
All randomness (ε, u, the VAE posterior draw) comes from :meth:`FluxProxy.sample_draws` with an
explicit generator, so two passes can see identical draws and one sample's draw never depends on
the batch it sits in (pass ``draws`` explicitly to compare batched and one-at-a-time losses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import Batch, Encoded, RaterInputs, T2IProxy, attention_context
from lightning_alchemist.proxy.text import TextConfig, TextEncoder, build_text_encoder

__all__ = ["FluxConfig", "FluxProxy", "pack_latents", "unpack_latents", "latent_image_ids"]

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")
TIMESTEP_MODES = ("random", "fixed", "stratified")


@dataclass
class FluxTransformerConfig:
    """``FluxTransformer2DModel`` arguments when built from config (defaults: diffusers' tiny test sizes, 16-ch latents)."""

    in_channels: int = 64
    num_layers: int = 1
    num_single_layers: int = 1
    attention_head_dim: int = 16
    num_attention_heads: int = 2
    joint_attention_dim: int = 32
    pooled_projection_dim: int = 32
    guidance_embeds: bool = True
    axes_dims_rope: list[int] = field(default_factory=lambda: [4, 4, 8])


@dataclass
class FluxVAEConfig:
    """``AutoencoderKL`` arguments when built from config (a tiny 2× VAE with FLUX's 16 latent channels)."""

    block_out_channels: list[int] = field(default_factory=lambda: [8, 16])
    layers_per_block: int = 1
    latent_channels: int = 16
    norm_num_groups: int = 4
    shift_factor: float = 0.1159
    scaling_factor: float = 0.3611


@dataclass
class FluxConfig:
    """Schema of ``model`` for ``family: flux``.

    ``path``: a local diffusers FLUX folder (``transformer/``, ``vae/``, ``scheduler/``, text encoders);
    ``None`` builds the transformer and VAE from ``transformer``/``vae`` with seeded random weights.
    """

    family: str = "flux"
    name: str = "flux_tiny"
    seed: int = 0
    path: Optional[str] = None
    image_size: int = 32
    transformer: FluxTransformerConfig = field(default_factory=FluxTransformerConfig)
    vae: FluxVAEConfig = field(default_factory=FluxVAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # objective (diffusers' FLUX training scripts)
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    timesteps: str = "random"  # random | fixed | stratified (per-sample u in the batch's strata)
    fixed_t: float = 0.5  # u for timesteps=fixed
    guidance_scale: float = 3.5
    sample_posterior: bool = True  # draw z from the VAE posterior (as the scripts do) rather than its mean
    # scheduler (training table; shift applies at inference when dynamic shifting is on)
    num_train_timesteps: int = 1000
    shift: float = 3.0
    use_dynamic_shifting: bool = True
    base_shift: float = 0.5
    max_shift: float = 1.15
    # sampling
    num_inference_steps: int = 20
    cfg_scale: float = 1.0  # true CFG with the empty caption when > 1 (FLUX-dev relies on the guidance embedding)


def pack_latents(z: Tensor) -> Tensor:
    """``[B,C,H,W]`` → ``[B,(H/2)(W/2),4C]`` (2×2 patches, FLUX's ``_pack_latents``)."""
    B, C, H, W = z.shape
    return z.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 2) * (W // 2), C * 4)


def unpack_latents(x: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`pack_latents` for a latent grid of ``h × w``."""
    B, N, D = x.shape
    return x.view(B, h // 2, w // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, D // 4, h, w)


def latent_image_ids(h: int, w: int, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[(h/2)(w/2), 3]`` position ids ``(0, row, col)`` of the packed tokens."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def _require_dir(path: Optional[str], what: str) -> Path:
    p = Path(path).expanduser() if path else None
    if p is None or not p.is_dir():
        raise ConfigError(f"config 'model.path': folder {path} not found; put a local diffusers FLUX folder ({what}) there")
    return p


class FluxProxy(T2IProxy):
    """Frozen VAE + frozen text encoder(s) + trainable ``FluxTransformer2DModel`` (``transformer``).

    ``encode`` returns ``{key, latents [B,16,h,w] (normalised posterior mean), latent_std, text [B,T,D],
    text_mask [B,T], pooled [B,P]}``.
    """

    trainable_attr = "transformer"
    frozen_attrs = ("vae", "text_encoder")
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

    def __init__(self, cfg: FluxConfig, text_encoder: Optional[TextEncoder] = None) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

        if cfg.weighting_scheme not in WEIGHTING_SCHEMES:
            raise ConfigError(f"config 'model.weighting_scheme': got '{cfg.weighting_scheme}', expected one of {WEIGHTING_SCHEMES}")
        if cfg.timesteps not in TIMESTEP_MODES:
            raise ConfigError(f"config 'model.timesteps': got '{cfg.timesteps}', expected one of {TIMESTEP_MODES}")
        if not 0.0 <= cfg.fixed_t < 1.0:
            raise ConfigError(f"config 'model.fixed_t': got {cfg.fixed_t}, expected 0 <= t < 1")
        self.cfg = cfg
        if cfg.path:
            root = _require_dir(cfg.path, "transformer/, vae/, scheduler/")
            try:
                self.transformer = FluxTransformer2DModel.from_pretrained(root, subfolder="transformer", local_files_only=True)
                self.vae = AutoencoderKL.from_pretrained(root, subfolder="vae", local_files_only=True)
                scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
            except (OSError, ValueError) as err:
                raise ConfigError(f"config 'model.path': cannot load FLUX from {root}: {' '.join(str(err).split())[:300]}") from None
        else:
            t, v = cfg.transformer, cfg.vae
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.transformer = FluxTransformer2DModel(
                    patch_size=1, in_channels=t.in_channels, num_layers=t.num_layers, num_single_layers=t.num_single_layers,
                    attention_head_dim=t.attention_head_dim, num_attention_heads=t.num_attention_heads,
                    joint_attention_dim=t.joint_attention_dim, pooled_projection_dim=t.pooled_projection_dim,
                    guidance_embeds=t.guidance_embeds, axes_dims_rope=tuple(t.axes_dims_rope))
                n = len(v.block_out_channels)
                self.vae = AutoencoderKL(
                    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                    up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(v.block_out_channels),
                    layers_per_block=v.layers_per_block, latent_channels=v.latent_channels, norm_num_groups=v.norm_num_groups,
                    sample_size=cfg.image_size, use_quant_conv=False, use_post_quant_conv=False,
                    shift_factor=v.shift_factor, scaling_factor=v.scaling_factor)
            scheduler = FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=cfg.num_train_timesteps, shift=cfg.shift, use_dynamic_shifting=cfg.use_dynamic_shifting,
                base_shift=cfg.base_shift, max_shift=cfg.max_shift)
        self.scheduler = scheduler
        if cfg.text.kind in ("clip", "t5", "clip+t5") and not cfg.text.path and cfg.path:
            cfg.text.path = cfg.path
        self.text_encoder = text_encoder if text_encoder is not None else build_text_encoder(cfg.text)
        self.vae.requires_grad_(False).eval()
        tc = self.transformer.config
        if self.text_encoder.hidden_size != tc.joint_attention_dim or self.text_encoder.pooled_size != tc.pooled_projection_dim:
            raise ConfigError(
                f"config 'model.text': text states {self.text_encoder.hidden_size}-d / pooled {self.text_encoder.pooled_size}-d do not "
                f"match the transformer (joint_attention_dim {tc.joint_attention_dim}, pooled_projection_dim {tc.pooled_projection_dim})")
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.shift_factor = float(self.vae.config.shift_factor or 0.0)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        n_train = len(scheduler.timesteps)
        # The training tables (unshifted with dynamic shifting; statically shifted otherwise), as in the scripts.
        self.register_buffer("_sigmas", scheduler.sigmas[:n_train].clone().float(), persistent=False)
        self.register_buffer("_timesteps", scheduler.timesteps[:n_train].clone().float(), persistent=False)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    # ------------------------------------------------------------------ interface

    @torch.no_grad()
    def encode(self, batch: Batch) -> Encoded:
        device = self._sigmas.device
        img = batch["image"].to(device, self.vae.dtype)
        if img.shape[-1] % (2 * self.vae_scale_factor) or img.shape[-2] % (2 * self.vae_scale_factor):
            raise ConfigError(f"image size {tuple(img.shape[-2:])} must be a multiple of {2 * self.vae_scale_factor} for FLUX packing")
        dist = self.vae.encode(img).latent_dist
        keys = list(batch.get("key") or [])
        ts = self.text_encoder.encode(list(batch["caption"]), keys=keys or None)
        return {"key": keys, "latents": ((dist.mean - self.shift_factor) * self.scaling_factor).float(),
                "latent_std": (dist.std * self.scaling_factor).float(), "text": ts.hidden, "text_mask": ts.mask, "pooled": ts.pooled}

    def sample_draws(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """The objective's random draws for a batch: ``noise``, ``posterior`` (ε of the VAE draw) and ``u`` [B]."""
        z = encoded["latents"]
        B = z.shape[0]
        gdev = generator.device if generator is not None else z.device
        noise = torch.randn(z.shape, generator=generator, device=gdev).to(z.device)
        post = torch.randn(z.shape, generator=generator, device=gdev).to(z.device)
        c = self.cfg
        if c.timesteps == "fixed":
            u = torch.full((B,), c.fixed_t)
        elif c.timesteps == "stratified":  # one draw per stratum [i/B, (i+1)/B), strata shuffled over samples
            perm = torch.randperm(B, generator=generator, device=gdev).cpu()
            u = (perm.float() + torch.rand(B, generator=generator, device=gdev).cpu()) / B
        else:
            from diffusers.training_utils import compute_density_for_timestep_sampling

            u = compute_density_for_timestep_sampling(c.weighting_scheme, B, logit_mean=c.logit_mean, logit_std=c.logit_std,
                                                      mode_scale=c.mode_scale, device=gdev, generator=generator).cpu()
        return {"noise": noise, "posterior": post, "u": u.to(z.device)}

    def per_sample_loss(self, encoded: Encoded, generator: Optional[torch.Generator] = None,
                        draws: Optional[dict[str, Tensor]] = None) -> Tensor:
        """Flow-matching loss per sample ``[B]``; ``draws`` (from :meth:`sample_draws`) overrides ``generator``."""
        if draws is None:
            draws = self.sample_draws(encoded, generator)
        z = encoded["latents"]
        if self.cfg.sample_posterior:
            z = z + encoded["latent_std"] * draws["posterior"]
        B, C, h, w = z.shape
        n = self._sigmas.shape[0]
        idx = (draws["u"] * n).long().clamp(0, n - 1)
        sigma = self._sigmas[idx].view(B, 1, 1, 1)
        timesteps = self._timesteps[idx]
        noise = draws["noise"]
        x_t = (1.0 - sigma) * z + sigma * noise
        pred = self._velocity(pack_latents(x_t), timesteps / 1000.0, encoded["text"], encoded["pooled"], h, w)
        target = noise - z
        weighting = self._weighting(sigma)
        return (weighting * (unpack_latents(pred, h, w).float() - target.float()) ** 2).reshape(B, -1).mean(1)

    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        """Packed normalised latents ``[B, N, 4·C_latent]`` (posterior mean), text states, mask, pooled."""
        return RaterInputs(pack_latents(encoded["latents"]), encoded["text"], encoded["text_mask"], encoded["pooled"])

    # ------------------------------------------------------------------ helpers

    def _weighting(self, sigma: Tensor) -> Tensor:
        s = self.cfg.weighting_scheme
        if s == "sigma_sqrt":
            return sigma.float() ** -2.0
        if s == "cosmap":
            return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
        return torch.ones_like(sigma)

    def _velocity(self, x: Tensor, t: Tensor, text: Tensor, pooled: Tensor, h: int, w: int) -> Tensor:
        B = x.shape[0]
        dtype = self.transformer.dtype
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((B,), self.cfg.guidance_scale, device=x.device, dtype=torch.float32)
        with attention_context(x.device):
            out = self.transformer(
                hidden_states=x.to(dtype), timestep=t.to(dtype), guidance=guidance, pooled_projections=pooled.to(dtype),
                encoder_hidden_states=text.to(dtype), txt_ids=torch.zeros(text.shape[1], 3, device=x.device, dtype=dtype),
                img_ids=latent_image_ids(h, w, x.device, dtype), return_dict=False)[0]
        return out

    @torch.no_grad()
    def null_text(self, batch_size: int) -> dict[str, Tensor]:
        ts = self.text_encoder.encode([""] * batch_size)
        return {"text": ts.hidden, "text_mask": ts.mask, "pooled": ts.pooled}

    def inference_sigmas(self, num_steps: int, seq_len: int) -> Tensor:
        """Euler schedule ``1 → 0`` with FLUX's shift (resolution-dependent ``mu`` when dynamic shifting is on)."""
        s = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
        c = self.cfg
        if c.use_dynamic_shifting:
            m = (c.max_shift - c.base_shift) / (4096 - 256)
            mu = seq_len * m + (c.base_shift - m * 256)
            s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
        else:
            s = c.shift * s / (1 + (c.shift - 1) * s)
        return torch.cat([s, torch.zeros(1, dtype=s.dtype)]).float()

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: Optional[torch.Generator] = None, num_inference_steps: Optional[int] = None,
                 cfg_scale: Optional[float] = None, height: Optional[int] = None, width: Optional[int] = None, **_: Any) -> Tensor:
        """Flow-matching Euler sampling; returns ``[N,3,H,W]`` in [-1,1]."""
        steps = num_inference_steps or self.cfg.num_inference_steps
        cfg_scale = self.cfg.cfg_scale if cfg_scale is None else cfg_scale
        H, W = height or self.image_size, width or self.image_size
        h, w = H // self.vae_scale_factor, W // self.vae_scale_factor
        was_training = self.training
        self.eval()
        try:
            B = len(prompts)
            ts = self.text_encoder.encode(list(prompts))
            C = self.vae.config.latent_channels
            device = self._sigmas.device
            gdev = generator.device if generator is not None else device
            x = pack_latents(torch.randn(B, C, h, w, generator=generator, device=gdev).to(device))
            null = self.null_text(B) if cfg_scale > 1.0 else None
            sigmas = self.inference_sigmas(steps, x.shape[1]).to(device)
            for i in range(steps):
                t = sigmas[i].expand(B)
                v = self._velocity(x, t, ts.hidden, ts.pooled, h, w).float()
                if null is not None:
                    vu = self._velocity(x, t, null["text"], null["pooled"], h, w).float()
                    v = vu + cfg_scale * (v - vu)
                x = x + (sigmas[i + 1] - sigmas[i]) * v
            z = unpack_latents(x, h, w) / self.scaling_factor + self.shift_factor
            return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)
        finally:
            self.train(was_training)
