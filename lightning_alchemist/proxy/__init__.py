"""Proxy text-to-image models behind one interface (:class:`T2IProxy`): STAR, FLUX, a user's own.

Names are imported lazily, so ``lightning_alchemist.proxy.base`` stays light for the rater.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "T2IProxy": "base", "RaterInputs": "base", "Batch": "base", "Encoded": "base",
    "StarProxy": "star.proxy", "StarConfig": "star.proxy",
    "MultiScaleVQVAE": "star.tokenizer", "VQConfig": "star.tokenizer",
    "StarTransformer": "star.transformer", "StarTransformerConfig": "star.transformer",
    "FluxProxy": "flux", "FluxConfig": "flux",
    "TextConfig": "text", "TextEncoder": "text", "build_text_encoder": "text", "precompute_text": "text",
    "FinetuneConfig": "lora", "apply_finetune": "lora", "lora_state_dict": "lora", "load_lora_state_dict": "lora",
    "build_proxy": "factory", "model_config": "factory", "register_family": "factory",
    "load_or_train_tokenizer": "star.train_vq", "train_tokenizer": "star.train_vq",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_alchemist.proxy' has no attribute '{name}'")
    return getattr(importlib.import_module(f"lightning_alchemist.proxy.{module}"), name)


def __dir__() -> list[str]:
    return __all__
