"""Structured configuration: validated dataclasses behind the Hydra config groups.

Every Hydra group under ``conf/`` has a dataclass here or in the module it configures. A wrong
type or an unknown key becomes a one-line :class:`ConfigError` that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_alchemist.errors import ConfigError

__all__ = ["ConfigError", "DataConfig", "RootConfig", "ShapesConfig", "data_config", "to_dataclass"]

T = TypeVar("T")


def one_line(text: str) -> str:
    """Collapse a (possibly multi-line) library message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def to_dataclass(node: Any, cls: type[T], where: str) -> T:
    """Validate ``node`` (a DictConfig, dict or None) against dataclass ``cls``.

    Args:
        node: the config subtree, e.g. ``cfg.data``.
        cls: the dataclass schema.
        where: the dotted path of ``node`` in the full config, used in error messages.

    Raises:
        ConfigError: one line naming the offending key, what was wrong and how to fix it.
    """
    if isinstance(node, cls):
        return node
    schema = OmegaConf.structured(cls)
    try:
        merged = OmegaConf.merge(schema, node if node is not None else {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        full = f"{where}.{key}" if key else where
        valid = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(
            f"config '{full}': {one_line(getattr(err, 'msg', err))} (valid keys of '{where}': {valid})"
        ) from None


@dataclass
class ShapesConfig:
    """The embedded ``shapes`` dataset (see :mod:`lightning_alchemist.data.shapes`)."""

    num_pool: int = 20_000
    num_val: int = 2_000
    resolution: int = 64
    shard_size: int = 1_000
    seed: int = 0
    # Share of pool samples of each defect kind; the rest are clean. Validation is always clean.
    defects: dict[str, float] = field(
        default_factory=lambda: {
            "plain": 0.08,
            "chaotic": 0.08,
            "mismatch": 0.08,
            "duplicate": 0.08,
            "degraded": 0.08,
        }
    )


@dataclass
class DataConfig:
    """A data source plus how to load it (schema of the ``data`` group)."""

    name: str = "shapes"
    # Pool shards: a path, brace pattern, glob, folder, or a list of those. Unused for ``shapes``.
    urls: Any = None
    # Held-out validation shards; if unset, a seeded ``val_fraction`` of the pool is held out.
    val_urls: Any = None
    val_fraction: float = 0.05
    image_size: int = 32
    batch_size: int = 32
    num_workers: int = 0
    # "map": indexed map-style dataset (exact epochs, samplers); "iterable": webdataset stream.
    style: str = "map"
    shuffle_buffer: int = 1_000
    cache_dir: Optional[str] = None
    shapes: ShapesConfig = field(default_factory=ShapesConfig)


def validate_data_config(cfg: DataConfig) -> DataConfig:
    """Cross-field checks that the dataclass types cannot express."""
    if cfg.style not in ("map", "iterable"):
        raise ConfigError(f"config 'data.style': got '{cfg.style}', expected 'map' or 'iterable'")
    if cfg.image_size <= 0 or cfg.batch_size <= 0:
        raise ConfigError("config 'data.image_size' and 'data.batch_size' must be positive")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"config 'data.val_fraction': got {cfg.val_fraction}, expected 0 <= f < 1")
    if cfg.name != "shapes" and cfg.urls is None:
        raise ConfigError(
            f"config 'data.urls' is required for data={cfg.name}: pass data.urls=/path/to/shards-{{000000..000099}}.tar"
        )
    return cfg


def data_config(node: Any) -> DataConfig:
    """Validate the ``data`` group."""
    return validate_data_config(to_dataclass(node, DataConfig, "data"))


def as_container(cfg: Any) -> Any:
    """A plain (resolved) python container from a DictConfig; other values pass through."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return cfg


@dataclass
class RootConfig:
    """Schema of ``conf/config.yaml``: top-level values plus one node per config group.

    Groups whose schema lives with the code they configure (model, rater, ...) are typed ``Any``
    here and validated by their builders with :func:`to_dataclass`.
    """

    keep: float = 0.5
    seed: int = 0
    out: str = "outputs"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    finetune: Any = None
    rater: Any = None
    selection: Any = None
    trainer: Any = None
    eval: Any = None
    experiment: Any = None
    # Reuse artifacts instead of computing them: a ratings folder (skips rater training and
    # scoring) or a selection manifest (skips selection too); recipes/train.py maps selection=PATH here.
    ratings: Optional[str] = None
    selection_path: Optional[str] = None
    extras: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Register the structured schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=RootConfig)
