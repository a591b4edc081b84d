"""lightning_alchemist: learned data selection for text-to-image training with PyTorch Lightning.

The public API is importable from here; submodules load on first use, so ``import
lightning_alchemist`` stays cheap (no diffusers/transformers until a model is needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The names a user imports; everything else stays importable from its module
# (``lightning_alchemist.selection.strategies.TopK``, ``lightning_alchemist.rater.scoring.score``, ...).
_EXPORTS: dict[str, str] = {
    # drop a selection into an existing Trainer
    "DataSelectionCallback": "lightning_alchemist.callbacks.data_selection",
    "Selection": "lightning_alchemist.selection.manifest",
    "Ratings": "lightning_alchemist.selection.ratings",
    "ShiftGaussian": "lightning_alchemist.selection.strategies",
    "build_strategy": "lightning_alchemist.selection.strategies",
    # learn the ratings
    "RaterModule": "lightning_alchemist.rater.module",
    "T2IDataModule": "lightning_alchemist.data.datamodule",
    "T2IProxy": "lightning_alchemist.proxy.base",
    "StarProxy": "lightning_alchemist.proxy.star.proxy",
    "FluxProxy": "lightning_alchemist.proxy.flux",
    "register_family": "lightning_alchemist.proxy.factory",
    # the whole pipeline
    "run_pipeline": "lightning_alchemist.pipeline.run",
    # errors
    "AlchemistError": "lightning_alchemist.errors",
    "ConfigError": "lightning_alchemist.errors",
    "DataError": "lightning_alchemist.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_alchemist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
