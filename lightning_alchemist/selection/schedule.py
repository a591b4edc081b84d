"""Per-epoch weight schedules of a selection manifest: the curriculum's math, in one place.

A manifest with ``meta["schedule"]`` (written by :class:`~lightning_alchemist.selection.strategies.Curriculum`)
and a ``bin`` per row gets new sampling weights every epoch; :meth:`Selection.epoch_weights` asks
:func:`schedule_weights`, and the callback's sampler draws from them.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from lightning_alchemist.errors import DataError

__all__ = ["curriculum_bin_weights", "schedule_weights"]


def curriculum_bin_weights(epoch: int, epochs: int, num_bins: int = 10) -> np.ndarray:
    """The official code's moving cosine: ``w_b(e) = ½(1 + cos(π(e/E − b/(B−1))))``.

    Bin 0 holds the highest ratings: epoch 0 favours it, and the peak moves to the last bin by epoch E.
    """
    b = np.arange(num_bins, dtype=np.float64) / max(num_bins - 1, 1)
    e = min(max(epoch, 0), epochs) / max(epochs, 1)
    return 0.5 * (1.0 + np.cos(np.pi * (e - b)))


def schedule_weights(schedule: Mapping[str, Any], weights: np.ndarray, bins: Optional[np.ndarray], epoch: int,
                     epochs: Optional[int] = None) -> np.ndarray:
    """Every row's weight for ``epoch`` under ``schedule`` (``epochs``: its length when the manifest leaves it open)."""
    if schedule.get("name") == "curriculum":
        length = schedule.get("epochs") or epochs
        if not length:
            raise DataError("selection: this curriculum leaves 'epochs' open; pass the training length (max_epochs)")
        if bins is None:
            raise DataError("selection: a curriculum manifest needs a 'bin' column; rewrite it with selection=curriculum")
        per_bin = curriculum_bin_weights(epoch, int(length), int(schedule["num_bins"]))
        return weights * per_bin[bins]
    raise DataError(f"selection: unknown schedule {schedule.get('name')!r}; upgrade lightning_alchemist")
