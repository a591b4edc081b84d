"""Schedules of rater training: the upper-level weight α per epoch and the learning-rate factor per step."""

from __future__ import annotations

import math

from lightning_alchemist.rater.config import OptimConfig, RaterConfig

__all__ = ["alpha_at", "lr_factor"]


def alpha_at(epoch: int, cfg: RaterConfig) -> float:
    """α_e = max(α_min, α0 − δ·e); ``alpha_epoch0`` (if set) replaces α_0 so the pool counts from the start."""
    if epoch == 0 and cfg.alpha_epoch0 is not None:
        return float(cfg.alpha_epoch0)
    return float(max(cfg.alpha_min, cfg.alpha0 - cfg.alpha_decay * epoch))


def lr_factor(step: int, total_steps: float, steps_per_epoch: float, cfg: OptimConfig) -> float:
    """Multiplier of the peak lr at ``step`` (official "lin0"): linear warm-up from
    ``warmup_start`` over ``warmup_epochs``, flat for ``flat_fraction`` of the rest, then linear
    down to ``final_factor`` at ``total_steps``. An unknown (infinite) total stays flat after warm-up.
    """
    warm = max(0.0, cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / warm
    if not math.isfinite(total_steps) or total_steps <= warm:
        return 1.0
    rest = total_steps - warm
    flat_end = warm + cfg.flat_fraction * rest
    if step < flat_end:
        return 1.0
    progress = min(1.0, (step - flat_end) / max(1.0, total_steps - flat_end))
    return 1.0 + (cfg.final_factor - 1.0) * progress
