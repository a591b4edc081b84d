"""Where lightning_alchemist caches generated data, indices and trained helper models."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CACHE_ENV = "LIGHTNING_ALCHEMIST_CACHE"


def cache_root() -> Path:
    """``$LIGHTNING_ALCHEMIST_CACHE`` if set, else ``~/.cache/lightning_alchemist``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning_alchemist"


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent) for the ``with`` block.

    Guards a cached artifact so that two processes (sweep jobs, DDP ranks, tests) do not build
    it at the same time: the second waits, then finds it built.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
