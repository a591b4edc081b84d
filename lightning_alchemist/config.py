"""Configuration helpers and the ``data`` group's schema.

Every Hydra group under ``conf/`` has a dataclass in the module it configures; that dataclass is
the single source of the group's defaults (the YAML files only select and override). The root
schema, its registration with Hydra's ConfigStore and the one cross-field ``validate`` live in
:mod:`lightning_alchemist.schema`. A wrong type or an unknown key becomes a one-line
:class:`ConfigError` that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_alchemist.errors import ConfigError

__all__ = ["Choice", "ConfigError", "DataConfig", "DataStyle", "ShapesConfig", "as_container", "data_config", "to_dataclass"]

T = TypeVar("T")


class Choice(str, enum.Enum):
    """A string choice of a config field, checked by Hydra at compose time (OmegaConf has no ``Literal``).

    Members compare, hash and serialise like their string values, so ``cfg.style == "map"`` and
    JSON fingerprints are unchanged whether a value came from YAML (a member) or Python (a str).
    """

    def __str__(self) -> str:
        return str(self.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)  # type: ignore[arg-type]

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class DataStyle(Choice):
    map = "map"
    iterable = "iterable"


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
    # DataLoader worker processes; null = what the machine has (:func:`default_num_workers`).
    num_workers: Optional[int] = None
    # "map": indexed map-style dataset (exact epochs, samplers); "iterable": webdataset stream.
    style: DataStyle = DataStyle.map
    shuffle_buffer: int = 1_000
    cache_dir: Optional[str] = None
    shapes: ShapesConfig = field(default_factory=ShapesConfig)


def default_num_workers() -> int:
    """DataLoader workers for this machine: one per spare core, at most 4 (0 on a single core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def validate_data_config(cfg: DataConfig) -> DataConfig:
    """Cross-field checks that the dataclass types cannot express; resolves ``num_workers=None``."""
    if cfg.style not in DataStyle.values():
        raise ConfigError(f"config 'data.style': got '{cfg.style}', expected one of {', '.join(DataStyle.values())}")
    for name in ("image_size", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"config 'data.{name}': got {getattr(cfg, name)}, expected a positive number")
    if cfg.num_workers is None:
        cfg.num_workers = default_num_workers()
    elif cfg.num_workers < 0:
        raise ConfigError(f"config 'data.num_workers': got {cfg.num_workers}, expected >= 0 (or null for the machine's cores)")
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


def as_container(value: Any) -> Any:
    """Plain, JSON-able python values from any config: DictConfig/ListConfig (resolved), dataclasses,
    choices (their strings), paths, tuples; nested. The one config-to-container helper."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return as_container(OmegaConf.to_container(value, resolve=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_container(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return as_container(value.value)
    if isinstance(value, dict):
        return {str(k): as_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_container(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value
