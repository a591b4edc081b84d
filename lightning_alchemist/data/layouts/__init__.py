"""Readers for the layouts datasets are released in: ``data=hpdv3``, ``data=laion``, ``data=flux_reason``, ``data=folder``.

Each turns ``data.root`` into webdataset shards the rest of the package reads unchanged (samples of
key, image, caption and ``.json`` metadata): img2dataset output in place (its parquet as the key
index), the others through a one-time conversion cached by the source's fingerprint
(:mod:`~lightning_alchemist.data.layouts.convert`). Bad input is skipped and counted by reason.
"""

from __future__ import annotations

from typing import Any

from lightning_alchemist.config import LAYOUTS, DataConfig
from lightning_alchemist.data.layouts.convert import Prepared, Skips

__all__ = ["LAYOUTS", "Prepared", "Skips", "layout_identity", "prepare_layout"]


def _module(name: str) -> Any:
    if name == "hpdv3":
        from lightning_alchemist.data.layouts import hpdv3 as mod
    elif name == "laion":
        from lightning_alchemist.data.layouts import laion as mod
    elif name == "flux_reason":
        from lightning_alchemist.data.layouts import flux_reason as mod
    elif name == "folder":
        from lightning_alchemist.data.layouts import folder as mod
    else:
        raise KeyError(f"data.name: '{name}' is not a layout ({', '.join(LAYOUTS)})")
    return mod


def layout_identity(cfg: DataConfig) -> dict[str, Any]:
    """What names the samples of a layout (file stats and the reader's settings), without converting anything."""
    return _module(cfg.name).identity(cfg)


def prepare_layout(cfg: DataConfig, seed: int = 0) -> Any:
    """The :class:`~lightning_alchemist.data.sources.DataSource` of a layout (converting or indexing it once)."""
    from lightning_alchemist.data.sources import DataSource
    from lightning_alchemist.data.split import HeldOutSplit

    if cfg.name == "laion":
        from lightning_alchemist.data.layouts.laion import KeyIndexSplit, prepare

        prepared, hashes = prepare(cfg)
        split: HeldOutSplit = KeyIndexSplit(cfg.val_fraction, seed, hashes)
    else:
        prepared = _module(cfg.name).prepare(cfg)
        split = HeldOutSplit(0.0 if prepared.val_urls else cfg.val_fraction, seed)
    return DataSource(name=cfg.name, pool_urls=prepared.pool_urls, val_urls=prepared.val_urls, split=split,
                      root=prepared.folder, prepared=prepared)
