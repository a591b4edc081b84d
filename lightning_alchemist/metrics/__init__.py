"""Evaluation of trained targets: held-out loss, the ``shapes`` judge (alignment), FID with pluggable
features, CLIP score from local weights. Names load on first use (no torchmetrics import until needed).

The functions ``fid.fid`` and ``clip_score.clip_score`` share their submodules' names, so they are
not re-exported here (the submodule would shadow them): import them from their modules."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "EvalConfig": "lightning_alchemist.metrics.evaluate",
    "eval_config": "lightning_alchemist.metrics.evaluate",
    "evaluate_model": "lightning_alchemist.metrics.evaluate",
    "load_target": "lightning_alchemist.metrics.evaluate",
    "ShapesJudge": "lightning_alchemist.metrics.judge",
    "JudgeConfig": "lightning_alchemist.metrics.judge",
    "ensure_judge": "lightning_alchemist.metrics.judge",
    "alignment": "lightning_alchemist.metrics.judge",
    "alignment_report": "lightning_alchemist.metrics.judge",
    "JudgeFeatures": "lightning_alchemist.metrics.fid",
    "load_inception": "lightning_alchemist.metrics.fid",
    "load_clip": "lightning_alchemist.metrics.clip_score",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightning_alchemist.metrics' has no attribute {name!r}")
