"""``build_proxy(model_cfg, finetune_cfg)``: a configured proxy from validated config nodes."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from lightning_alchemist.config import as_container, to_dataclass
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import T2IProxy
from lightning_alchemist.proxy.lora import FinetuneConfig, apply_finetune, finetune_config

__all__ = ["build_proxy", "fit_to_data", "model_config", "register_family", "FAMILIES"]


def _star() -> tuple[type, Callable[[Any], T2IProxy]]:
    from lightning_alchemist.proxy.star.proxy import StarConfig, StarProxy

    return StarConfig, StarProxy


def _flux() -> tuple[type, Callable[[Any], T2IProxy]]:
    from lightning_alchemist.proxy.flux import FluxConfig, FluxProxy

    return FluxConfig, FluxProxy


FAMILIES: dict[str, Callable[[], tuple[type, Callable[[Any], T2IProxy]]]] = {"star": _star, "flux": _flux}
"""``model.family`` → a loader returning (config dataclass, builder taking the validated config)."""


def register_family(name: str, config_cls: type, builder: Callable[[Any], T2IProxy]) -> None:
    """Make a user's own proxy buildable from ``model.family=<name>``."""
    FAMILIES[name] = lambda: (config_cls, builder)


def _missing(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys left as ``???`` (without resolving interpolations, which would fail on them)."""
    from omegaconf import DictConfig, OmegaConf

    out = []
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            out.append(f"{prefix}{key}")
        else:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_interpolation():
                out += _missing(child, f"{prefix}{key}.")
    return out


def model_config(node: Any) -> Any:
    """Validate the ``model`` node against its family's schema."""
    if node is None:
        raise ConfigError("config 'model' is missing: pass model=star_tiny (or flux_tiny, star_40m, flux, ...)")
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return node
    from omegaconf import DictConfig

    if isinstance(node, DictConfig):
        missing = sorted(f"model.{k}" for k in _missing(node))
        if missing:
            raise ConfigError(f"config {', '.join(repr(k) for k in missing)} required for model '{node.get('name', '?')}': "
                              f"pass {' '.join(k + '=/local/path' for k in missing)} (nothing is downloaded)")
    container = as_container(node)
    if not isinstance(container, dict):
        raise ConfigError(f"config 'model': expected a mapping, got {type(container).__name__}")
    family = container.get("family", "star")
    if family not in FAMILIES:
        raise ConfigError(f"config 'model.family': got '{family}', expected one of {sorted(FAMILIES)}")
    cls, _ = FAMILIES[family]()
    cfg = to_dataclass(container, cls, "model")
    _check_local_weights(cfg)
    return cfg


def _check_local_weights(cfg: Any) -> None:
    """Real models need local weights (nothing is downloaded): name the path keys that are unset."""
    needed = []
    text = getattr(cfg, "text", None)
    real = text is not None and str(getattr(text, "kind", "tiny")) != "tiny"  # a pretrained text encoder: a real model
    if real and not getattr(text, "path", None):
        needed.append("model.path" if getattr(cfg, "family", None) == "flux" else "model.text.path")
    tok = getattr(cfg, "tokenizer", None)
    if real and tok is not None and not getattr(tok, "checkpoint", None) and not getattr(tok, "auto_train", True):
        needed.append("model.tokenizer.checkpoint")
    if needed:
        raise ConfigError(f"config {', '.join(repr(k) for k in needed)} required for model '{getattr(cfg, 'name', '?')}': "
                          f"pass {' '.join(k + '=/local/path' for k in needed)} (nothing is downloaded)")


def build_proxy(model_cfg: Any, finetune_cfg: Optional[Any] = None) -> T2IProxy:
    """Build the proxy of ``model_cfg`` and apply the fine-tuning mode of ``finetune_cfg`` (default: full)."""
    mcfg = model_config(model_cfg)
    ft = finetune_cfg if isinstance(finetune_cfg, FinetuneConfig) else finetune_config(finetune_cfg)
    _, builder = FAMILIES[mcfg.family]()
    return apply_finetune(builder(mcfg), ft)


def fit_to_data(model: Any, data: Any) -> Any:
    """The ``model`` node with its data-fitted frozen parts pointed at the run's ``data`` node.

    STAR's tiny VQ tokenizer (no ``model.tokenizer.checkpoint``, ``auto_train`` on) then trains on a
    sample of that pool, cached by the data's identity, instead of on ``shapes``. Nodes it does not
    apply to come back unchanged: other families, a user's ``class`` proxy, a pretrained tokenizer,
    one already bound, or ``shapes`` data (its tokenizer is the default, so the node stays as it was).
    """
    node = as_container(model)
    if data is None or not isinstance(node, dict) or "class" in node or node.get("family", "star") != "star":
        return model
    tok = dict(node.get("tokenizer") or {})
    if tok.get("checkpoint") or tok.get("auto_train") is False or tok.get("train_data"):
        return model
    from lightning_alchemist.config import data_config

    data_node = as_container(data)
    validated = data_config(data_node)
    if validated.name == "shapes" and validated.urls is None:
        return model
    return {**node, "tokenizer": {**tok, "train_data": dict(data_node)}}
