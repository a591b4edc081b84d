"""Where lightning_alchemist caches generated data, indices and trained helper models."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

CACHE_ENV = "LIGHTNING_ALCHEMIST_CACHE"


def cache_root() -> Path:
    """``$LIGHTNING_ALCHEMIST_CACHE`` if set, else ``~/.cache/lightning_alchemist``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning_alchemist"


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], tmp: Optional[Path] = None) -> Path:
    """``write(tmp)`` then rename it to ``path``: readers see the whole file or none of it.

    A failed write (a full disk, a read-only folder) removes the temp file and raises a one-line
    :class:`~lightning_alchemist.errors.StorageError` naming ``path``; nothing half-written is left to be
    taken as done, so a rerun writes it again.
    """
    from lightning_alchemist.errors import StorageError

    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = err.strerror or str(err) or type(err).__name__
        raise StorageError(f"cannot write {path}: {reason} (errno {err.errno}); nothing of it was kept. Free space or fix "
                           f"permissions under {path.parent}, then rerun the same command: finished files are reused") from None
    return path


_CLAIMED: dict[str, str] = {}


def resume_checkpoint(folder: str | os.PathLike, resume: str = "auto") -> Optional[Path]:
    """The ``last.ckpt`` an interrupted training left in ``folder`` to continue from (``resume="auto"``), or None.

    ``resume="never"`` deletes what an interrupted run left there, so training starts from step 0.
    """
    import shutil

    if resume == "never":
        shutil.rmtree(folder, ignore_errors=True)
        return None
    last = Path(folder) / "last.ckpt"
    return last if last.is_file() else None


def unique_dir(base: str) -> str:
    """``base``, or ``base_1``, ``base_2`` ...: the first folder this process creates itself (an atomic ``mkdir``).

    Hydra's run folders are named by the second a job started; two jobs started in the same second would
    share one (and overwrite each other's report and checkpoints). Registered as the ``unique_dir``
    resolver; the same ``base`` gives the same folder for the rest of the process.
    """
    if base in _CLAIMED:
        return _CLAIMED[base]
    path = Path(base).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 0
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}_{n}")
    _CLAIMED[base] = str(candidate)
    return str(candidate)


def register_resolvers() -> None:
    """``${unique_dir:...}`` for the recipes' Hydra run and sweep folders (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)


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
