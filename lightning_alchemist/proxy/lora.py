"""Fine-tuning modes: ``full`` (the whole trainable module) or ``lora`` (peft adapters only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_alchemist.config import Choice, to_dataclass
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import T2IProxy

__all__ = ["FinetuneConfig", "finetune_config", "apply_finetune", "lora_state_dict", "load_lora_state_dict", "trainable_names"]

class FinetuneMode(Choice):
    full = "full"
    lora = "lora"


class Schedule(Choice):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


SCHEDULES = Schedule.values()


@dataclass
class FinetuneConfig:
    """Schema of the ``finetune`` group: what trains and how it is optimised.

    ``mode=full`` trains the proxy's trainable module (STAR transformer, FLUX transformer); ``mode=lora``
    freezes it and trains peft LoRA adapters on ``target_modules`` (default: the family's attention
    projections). Optimiser: AdamW(β, weight_decay; no decay on norms, biases, position/level
    embeddings and attention scales), linear warm-up, then ``schedule`` down to ``min_lr_ratio·lr``.
    """

    mode: FinetuneMode = FinetuneMode.full
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: Optional[list[str]] = None
    init_lora_weights: str = "gaussian"
    lr: float = 3e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 20
    schedule: Schedule = Schedule.cosine
    min_lr_ratio: float = 0.1
    caption_dropout: float = 0.1  # training only (CFG); never while scoring


def finetune_config(node: Any) -> FinetuneConfig:
    """Validate the ``finetune`` node (one-line :class:`ConfigError`)."""
    cfg = to_dataclass(node, FinetuneConfig, "finetune")
    if cfg.mode not in ("full", "lora"):
        raise ConfigError(f"config 'finetune.mode': got '{cfg.mode}', expected 'full' or 'lora'")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"config 'finetune.schedule': got '{cfg.schedule}', expected one of {SCHEDULES}")
    if cfg.mode == "lora" and cfg.rank < 1:
        raise ConfigError(f"config 'finetune.rank': got {cfg.rank}, expected >= 1")
    if cfg.lr <= 0 or len(cfg.betas) != 2 or not 0 <= cfg.caption_dropout < 1:
        raise ConfigError("config 'finetune': lr must be > 0, betas two values, caption_dropout in [0, 1)")
    return cfg


def apply_finetune(proxy: T2IProxy, cfg: FinetuneConfig) -> T2IProxy:
    """Freeze everything, then unfreeze the trainable module (``full``) or add and unfreeze LoRA adapters (``lora``)."""
    proxy.requires_grad_(False)
    module = proxy.trainable
    if cfg.mode == "full":
        module.requires_grad_(True)
        for name, p in module.named_parameters():
            if name.startswith("class_emb"):  # STAR's unused VAR leftover: no gradient ever reaches it
                p.requires_grad_(False)
        return proxy
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(cfg.target_modules or proxy.lora_targets)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      init_lora_weights=cfg.init_lora_weights)
    seed = int(getattr(getattr(proxy, "cfg", None), "seed", 0))
    try:
        with torch.random.fork_rng(devices=[]):  # adapters are initialised from the model seed, reproducibly
            torch.manual_seed(seed + 1)
            inject_adapter_in_model(lcfg, module)
    except ValueError as err:
        raise ConfigError(f"config 'finetune.target_modules': {targets} match no module of the {type(module).__name__} "
                          f"({' '.join(str(err).split())[:200]})") from None
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)
    return proxy


def trainable_names(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad]


def lora_state_dict(proxy: T2IProxy) -> dict[str, Tensor]:
    """The adapter weights only (peft naming, without the adapter name), e.g. to ship a LoRA."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(proxy.trainable)


def load_lora_state_dict(proxy: T2IProxy, state: dict[str, Tensor]) -> None:
    """Load adapter weights written by :func:`lora_state_dict` (the proxy must already carry adapters)."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(proxy.trainable, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"LoRA weights do not match the model: {len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
