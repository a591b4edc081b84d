"""The ``features`` config node: whether and how the encode-once feature cache is used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from lightning_alchemist.config import Choice, to_dataclass
from lightning_alchemist.errors import ConfigError

__all__ = ["FeaturesConfig", "FeaturesUse", "features_config"]


class FeaturesUse(Choice):
    auto = "auto"  # encode once and read the cache wherever it applies (map-style data)
    off = "off"  # every stage decodes images and runs the frozen encoders itself (online augmentations)
    on = "on"  # like auto, and the target alone encodes too; streamed data or a proxy without frozen_attrs is an error


@dataclass
class FeaturesConfig:
    """Schema of ``features`` (top level of the root config)."""

    use: FeaturesUse = FeaturesUse.auto
    # Samples per encoder forward in the encode stage; null = data.batch_size.
    batch_size: Optional[int] = None


def features_config(node: Any) -> FeaturesConfig:
    """Validate the ``features`` node (one-line errors)."""
    cfg = to_dataclass(node, FeaturesConfig, "features")
    if cfg.batch_size is not None and cfg.batch_size <= 0:
        raise ConfigError(f"config 'features.batch_size': got {cfg.batch_size}, expected a positive number (or null for data.batch_size)")
    return cfg
