"""Process-wide run settings, applied once at the start of a run."""

from __future__ import annotations

import logging
from typing import Optional

__all__ = ["set_threads"]

log = logging.getLogger(__name__)


def set_threads(num_threads: Optional[int]) -> None:
    """``torch.set_num_threads`` for the whole run (``None`` leaves torch's default).

    Called once, before the first stage: a tokenizer or judge trained on first use runs before any
    trainer, and oversubscribed cores (more threads than free cores) run several times slower.
    """
    if not num_threads:
        return
    import torch

    if torch.get_num_threads() != int(num_threads):
        torch.set_num_threads(int(num_threads))
        log.debug("torch threads: %d", num_threads)
