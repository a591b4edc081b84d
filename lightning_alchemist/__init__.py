"""lightning_alchemist: learned data selection for text-to-image training with PyTorch Lightning.

The public API is importable from here; submodules load on first use, so ``import
lightning_alchemist`` stays cheap (no diffusers/transformers until a model is needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data
    "T2IDataModule": "lightning_alchemist.data.datamodule",
    "build_datamodule": "lightning_alchemist.data.datamodule",
    "ShardDataset": "lightning_alchemist.data.mapstyle",
    "SampleDecoder": "lightning_alchemist.data.decode",
    "collate_samples": "lightning_alchemist.data.sample",
    "make_stream": "lightning_alchemist.data.stream",
    "ensure_shapes": "lightning_alchemist.data.shapes",
    # proxies (the T2I models behind one interface)
    "T2IProxy": "lightning_alchemist.proxy.base",
    "RaterInputs": "lightning_alchemist.proxy.base",
    "StarProxy": "lightning_alchemist.proxy.star.proxy",
    "FluxProxy": "lightning_alchemist.proxy.flux",
    "T2IModule": "lightning_alchemist.proxy.module",
    "build_proxy": "lightning_alchemist.proxy.factory",
    "register_family": "lightning_alchemist.proxy.factory",
    # rater and scoring
    "RaterModule": "lightning_alchemist.rater.module",
    "RaterDataModule": "lightning_alchemist.rater.data",
    "RatingWriter": "lightning_alchemist.rater.writer",
    "load_rater": "lightning_alchemist.rater.scoring",
    "score": "lightning_alchemist.rater.scoring",
    "heuristic_ratings": "lightning_alchemist.rater.heuristics",
    "HeuristicConfig": "lightning_alchemist.rater.heuristics",
    # selection
    "Ratings": "lightning_alchemist.selection.ratings",
    "Selection": "lightning_alchemist.selection.manifest",
    "ShiftGaussian": "lightning_alchemist.selection.strategies",
    "Gsample": "lightning_alchemist.selection.strategies",
    "TopK": "lightning_alchemist.selection.strategies",
    "BottomK": "lightning_alchemist.selection.strategies",
    "Block": "lightning_alchemist.selection.strategies",
    "Random": "lightning_alchemist.selection.strategies",
    "Curriculum": "lightning_alchemist.selection.strategies",
    "build_strategy": "lightning_alchemist.selection.strategies",
    # sampling and the callback
    "WeightedSubsetSampler": "lightning_alchemist.sampling.samplers",
    "DistributedWeightedSubsetSampler": "lightning_alchemist.sampling.samplers",
    "KeyFilter": "lightning_alchemist.sampling.webdataset",
    "DataSelectionCallback": "lightning_alchemist.callbacks.data_selection",
    # evaluation
    "evaluate_model": "lightning_alchemist.metrics.evaluate",
    "EvalConfig": "lightning_alchemist.metrics.evaluate",
    "load_target": "lightning_alchemist.metrics.evaluate",
    "ShapesJudge": "lightning_alchemist.metrics.judge",
    "ensure_judge": "lightning_alchemist.metrics.judge",
    "alignment": "lightning_alchemist.metrics.judge",
    # the whole pipeline
    "run_pipeline": "lightning_alchemist.pipeline.run",
    # config and errors
    "ConfigError": "lightning_alchemist.errors",
    "DataError": "lightning_alchemist.errors",
    "AlchemistError": "lightning_alchemist.errors",
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
