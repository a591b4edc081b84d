"""Stage artifacts cached by a fingerprint of what produced them.

A stage (rater, ratings, selection) writes into ``<out>/cache/<stage>/<fingerprint>/`` and, once
it has finished, a ``stage.json`` marker there. A later run with the same inputs and config finds
the marker and reuses the folder; a run killed half-way leaves no marker, so the rerun builds the
stage again in the same folder (scoring then resumes shard by shard).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from lightning_alchemist.config import as_container
from lightning_alchemist.paths import file_lock, write_atomic

__all__ = ["StageResult", "cached_stage", "fingerprint"]

log = logging.getLogger(__name__)

MARKER = "stage.json"
# Temp files older than this process are what a killed build left behind (a live DDP peer's are newer).
_PROCESS_START = time.time()


def fingerprint(payload: Any) -> str:
    """12 hex digits naming ``payload`` (key order does not matter)."""
    blob = json.dumps(as_container(payload), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class StageResult:
    """Where a stage's artifact lives, what its build returned, whether it came from the cache, and what the build
    took in wall seconds (read back from the marker on reuse: the cost of producing the artifact, not of loading it;
    None where it was not measured, e.g. a DDP child's build)."""

    stage: str
    fingerprint: str
    path: Path
    info: dict[str, Any]
    cached: bool
    seconds: Optional[float] = None


def _reuse(stage: str, fp: str, folder: Path) -> StageResult:
    record = json.loads((folder / MARKER).read_text())
    log.info("%s: reusing %s (fingerprint %s)", stage, folder, fp)
    seconds = record.get("seconds")
    return StageResult(stage, fp, folder, dict(record.get("info") or {}), cached=True,
                       seconds=float(seconds) if seconds is not None else None)


def _is_rank_zero() -> bool:
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _drop_stale_temps(folder: Path) -> None:
    """Remove the ``*.tmp`` files an interrupted build of this stage left (never counted as done, but litter)."""
    for tmp in folder.rglob("*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < _PROCESS_START:
                tmp.unlink()
                log.info("removed %s, left by an interrupted build", tmp)
        except OSError:
            pass  # another process took it first


def cached_stage(root: Path, stage: str, key: Mapping[str, Any], build: Callable[[Path], Mapping[str, Any]]) -> StageResult:
    """Reuse ``root/stage/<fingerprint(key)>`` if a finished build is there, else ``build(folder)`` it.

    ``build`` writes its artifact into the folder and returns a JSON-ready summary, stored in the
    marker and handed back on reuse. Concurrent callers with the same key wait for each other.
    """
    fp = fingerprint(key)
    folder = Path(root) / stage / fp
    marker = folder / MARKER
    if not _is_rank_zero():
        # A DDP child re-runs the recipe in lockstep with rank 0, which holds the lock while its
        # stage's Trainer waits for this process: locking here would deadlock. Rank 0 writes the marker.
        if marker.is_file():
            return _reuse(stage, fp, folder)
        folder.mkdir(parents=True, exist_ok=True)
        return StageResult(stage, fp, folder, as_container(dict(build(folder))), cached=False)
    with file_lock(Path(root) / stage / f"{fp}.lock"):
        if marker.is_file():
            return _reuse(stage, fp, folder)
        folder.mkdir(parents=True, exist_ok=True)
        _drop_stale_temps(folder)
        t0 = time.time()
        info = as_container(dict(build(folder)))
        seconds = round(time.time() - t0, 2)
        record = {"stage": stage, "fingerprint": fp, "seconds": seconds, "key": as_container(key), "info": info}
        text = json.dumps(record, indent=2, sort_keys=True, default=str)
        # the marker appears only once the artifact is complete (and never half-written)
        write_atomic(marker, lambda tmp: tmp.write_text(text), tmp=marker.with_suffix(".json.tmp"))
    return StageResult(stage, fp, folder, info, cached=False, seconds=seconds)
