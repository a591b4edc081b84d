"""Where lightning_alchemist caches generated data, indices and trained helper models."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LIGHTNING_ALCHEMIST_CACHE"


def cache_root() -> Path:
    """``$LIGHTNING_ALCHEMIST_CACHE`` if set, else ``~/.cache/lightning_alchemist``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning_alchemist"
