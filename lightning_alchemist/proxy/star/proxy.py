"""``StarProxy``: the STAR scale-wise autoregressive T2I model behind the proxy interface."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_alchemist.config import Choice
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import Batch, Encoded, RaterInputs, T2IProxy
from lightning_alchemist.proxy.star.tokenizer import MultiScaleVQVAE, VQConfig
from lightning_alchemist.proxy.star.transformer import StarTransformer, StarTransformerConfig
from lightning_alchemist.proxy.text import TextConfig, TextEncoder, build_text_encoder

log = logging.getLogger(__name__)

__all__ = ["CFG_SCHEDULES", "StarConfig", "StarProxy", "load_star_state_dict"]



class CfgSchedule(Choice):
    """How classifier-free guidance grows over STAR's scales (checked at compose time)."""

    linear = "linear"
    constant = "constant"


CFG_SCHEDULES = CfgSchedule.values()


@dataclass
class StarConfig:
    """Schema of ``model`` for ``family: star``."""

    family: str = "star"
    name: str = "star_tiny"
    seed: int = 0  # initialises the transformer (the same weights on every rebuild)
    tokenizer: VQConfig = field(default_factory=VQConfig)
    transformer: StarTransformerConfig = field(default_factory=StarTransformerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # sampling defaults (generate)
    cfg_scale: float = 4.0
    # How guidance grows over the scales: "linear" (official STAR/VAR: t = cfg·si/(S−1), none at the first
    # scale) or "constant" (t = cfg at every scale, the first included: it carries the layout and background).
    cfg_schedule: CfgSchedule = CfgSchedule.linear
    top_k: int = 0
    top_p: float = 0.9


def load_star_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A transformer state dict from a STAR/VAR trainer checkpoint (``trainer.var_wo_ddp``) or a plain one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config 'model.transformer.checkpoint': file {p} not found; download the STAR checkpoint there")
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "trainer" in ckpt:
        ckpt = ckpt["trainer"]["var_wo_ddp"]
    return ckpt


class StarProxy(T2IProxy):
    """Frozen multi-scale VQ tokenizer + frozen text encoder + trainable next-scale transformer (``var``).

    ``encode`` returns ``{key, idx [B,L] long, teacher [B,L-1,Cvae], text [B,T,D], text_mask [B,T], pooled [B,P]}``.
    ``per_sample_loss`` is the mean token cross-entropy over all L tokens (STAR's loss, per sample).
    """

    trainable_attr = "var"
    frozen_attrs = ("tokenizer", "text_encoder")
    lora_targets = ("mat_qkv", "mat_q", "mat_kv", "proj")

    def __init__(self, cfg: StarConfig, tokenizer: Optional[MultiScaleVQVAE] = None, text_encoder: Optional[TextEncoder] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder if text_encoder is not None else build_text_encoder(cfg.text)
        if tokenizer is None:
            from lightning_alchemist.proxy.star.train_vq import load_or_train_tokenizer

            tokenizer = load_or_train_tokenizer(cfg.tokenizer)
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.var = StarTransformer(
                cfg.transformer,
                vocab_size=cfg.tokenizer.vocab_size,
                Cvae=cfg.tokenizer.z_channels,
                C_text=self.text_encoder.hidden_size,
                C_pooled=self.text_encoder.pooled_size,
                patch_nums=cfg.tokenizer.patch_nums,
            )
        if cfg.transformer.checkpoint:
            self.var.load_state_dict(load_star_state_dict(cfg.transformer.checkpoint), strict=True)
        # The rater's scale indices: the teacher-forcing input's (1…S-1), then S for the final f_hat.
        # The teacher input stops before the last scale (the only one with fine detail at small
        # sizes), so the rater also reads the full reconstruction f_hat at the last scale's size.
        teacher_levels = self.var.lvl_1L[self.var.first_l :].clone()
        last = cfg.tokenizer.patch_nums[-1]
        final_levels = torch.full((last * last,), len(cfg.tokenizer.patch_nums), dtype=teacher_levels.dtype)
        self.register_buffer("_levels", torch.cat([teacher_levels, final_levels]), persistent=False)

    @property
    def image_size(self) -> int:
        return self.tokenizer.image_size

    @torch.no_grad()
    def encode(self, batch: Batch) -> Encoded:
        device = self._levels.device
        img = batch["image"].to(device, torch.float32)
        idx = self.tokenizer.img_to_idx(img)
        teacher = self.tokenizer.quantize.idx_to_var_input(idx)
        final = self.tokenizer.quantize.idx_to_fhat(idx)  # [B, C, H, H]: every scale summed
        keys = list(batch.get("key") or [])
        ts = self.text_encoder.encode(list(batch["caption"]), keys=keys or None)
        return {"key": keys, "idx": torch.cat(idx, dim=1), "teacher": teacher, "text": ts.hidden,
                "text_mask": ts.mask, "pooled": ts.pooled,
                "final": final.flatten(2).transpose(1, 2)}

    def to_features(self, encoded: Encoded) -> dict[str, Tensor]:
        """The token ids and text states: the teacher-forcing input and ``final`` follow from the ids
        (a codebook lookup and the φ convolutions), at a fraction of their size."""
        return {name: encoded[name] for name in ("idx", "text", "text_mask", "pooled")}

    @torch.no_grad()
    def from_features(self, features: dict[str, Tensor]) -> Encoded:
        if "teacher" in features:  # a full encoding (stored by the default hook)
            return dict(features)
        q = self.tokenizer.quantize
        device = self._levels.device
        idx = features["idx"].to(device, torch.long)
        parts = list(idx.split([p * p for p in q.v_patch_nums], dim=1))
        final = q.idx_to_fhat(parts)
        return {"idx": idx, "teacher": q.idx_to_var_input(parts), "text": features["text"].to(device),
                "text_mask": features["text_mask"].to(device), "pooled": features["pooled"].to(device),
                "final": final.flatten(2).transpose(1, 2)}

    def logits(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.var(encoded["teacher"], encoded["text"], encoded["text_mask"], encoded["pooled"], generator)

    def per_sample_loss(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        logits = self.logits(encoded, generator)
        B, L, V = logits.shape
        ce = F.cross_entropy(logits.reshape(B * L, V).float(), encoded["idx"].reshape(-1), reduction="none")
        return ce.view(B, L).mean(1)

    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        """Every scale: teacher-forcing features ``[B, L-1, Cvae]`` (scales 1…S-1; scale 0 is the pooled-text
        start token) then the final ``f_hat`` ``[B, pn_S², Cvae]`` (level S); ``levels`` their scale indices."""
        final = encoded.get("final")
        if final is None:  # an encoding made before "final" existed: rebuild it from the indices
            q = self.tokenizer.quantize
            sizes = [p * p for p in q.v_patch_nums]
            final = q.idx_to_fhat(list(encoded["idx"].split(sizes, dim=1))).flatten(2).transpose(1, 2)
        tokens = torch.cat([encoded["teacher"], final.to(encoded["teacher"].dtype)], dim=1)
        return RaterInputs(tokens, encoded["text"], encoded["text_mask"], encoded["pooled"], self._levels)

    @torch.no_grad()
    def null_text(self, batch_size: int) -> dict[str, Tensor]:
        ts = self.text_encoder.encode([""] * batch_size)
        return {"text": ts.hidden, "text_mask": ts.mask, "pooled": ts.pooled}

    @torch.no_grad()
    def generate(self, prompts: list[str], generator: Optional[torch.Generator] = None, cfg_scale: Optional[float] = None,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, cfg_schedule: Optional[str] = None, **_: Any) -> Tensor:
        """Next-scale sampling with classifier-free guidance ``(1+t)·cond − t·uncond``: ``t = cfg·si/(S−1)``
        (``cfg_schedule="linear"``) or ``t = cfg`` at every scale (``"constant"``)."""
        cfg_scale = self.cfg.cfg_scale if cfg_scale is None else cfg_scale
        schedule = self.cfg.cfg_schedule if cfg_schedule is None else cfg_schedule
        if schedule not in CFG_SCHEDULES:
            raise ConfigError(f"config 'model.cfg_schedule': got '{schedule}', expected one of {list(CFG_SCHEDULES)}")
        top_k = self.cfg.top_k if top_k is None else top_k
        top_p = self.cfg.top_p if top_p is None else top_p
        was_training = self.training
        self.eval()
        try:
            B = len(prompts)
            ts = self.text_encoder.encode(list(prompts))
            null = self.null_text(B)
            use_cfg = cfg_scale > 0
            text = torch.cat([ts.hidden, null["text"]]) if use_cfg else ts.hidden
            mask = torch.cat([ts.mask, null["text_mask"]]) if use_cfg else ts.mask
            pooled = torch.cat([ts.pooled, null["pooled"]]) if use_cfg else ts.pooled
            q = self.tokenizer.quantize
            pns, S, C = self.tokenizer.patch_nums, len(self.tokenizer.patch_nums), q.Cvae
            H = pns[-1]
            device = pooled.device
            f_hat = torch.zeros(B, C, H, H, device=device)
            teacher = torch.zeros(B, 0, C, device=device)
            for si, pn in enumerate(pns):
                inp = torch.cat([teacher, teacher]) if use_cfg else teacher
                logits = self.var(inp, text, mask, pooled)[:, -pn * pn :].float()
                if use_cfg:
                    t = cfg_scale * si / max(S - 1, 1) if schedule == "linear" else cfg_scale
                    logits = (1 + t) * logits[:B] - t * logits[B:]
                idx = _sample(logits, top_k, top_p, generator)
                h = q.embedding(idx).transpose(1, 2).reshape(B, C, pn, pn)
                f_hat, nxt = q.next_input(si, f_hat, h)
                if si < S - 1:
                    teacher = torch.cat([teacher, nxt.reshape(B, C, -1).transpose(1, 2)], dim=1)
            return self.tokenizer.fhat_to_img(f_hat)
        finally:
            self.train(was_training)


def _sample(logits: Tensor, top_k: int, top_p: float, generator: Optional[torch.Generator]) -> Tensor:
    """Top-k / top-p sampling over the last dim of ``[B, n, V]`` with an explicit generator."""
    B, n, V = logits.shape
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1).reshape(B * n, V)
    return torch.multinomial(probs, 1, generator=generator).view(B, n)
