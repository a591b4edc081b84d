"""The harness shared by the embedded generated datasets (:mod:`~lightning_alchemist.data.shapes`,
:mod:`~lightning_alchemist.data.glyphs`): per-sample seeding, the defect plan, config checks, shard
jobs written in parallel, and atomic materialisation under the cache.

Each generator keeps what is its own (scenes, captions, rendering, duplicate plans, the labels'
columns, summary fields) and hands this module a ``make(split, index, kind, extra)`` that returns
one sample. Everything here is deterministic for its inputs, so a generator built on it writes the
same bytes (bar the tar members' mtimes) for the same config.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image, ImageFilter

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.paths import cache_root

__all__ = [
    "CLEAN",
    "GeneratedArtifacts",
    "ShardJob",
    "cache_folder",
    "defect_plan",
    "degrade",
    "fingerprint",
    "materialise",
    "png_bytes",
    "read_labels",
    "sample_key",
    "scene_rng",
    "shard_jobs",
    "validate_generated_config",
    "write_shards",
]

CLEAN = "clean"
SPLIT_IDS = {"pool": 0, "val": 1}  # part of every sample's seed: never renumber

A = TypeVar("A", bound="GeneratedArtifacts")
# make(split, index, kind, extra) -> {"__key__", "png", "txt", "json"}; ``extra`` is the index's plan entry or None.
MakeSample = Callable[[str, int, str, Any], dict[str, Any]]


@dataclass
class GeneratedArtifacts:
    """Where a materialised generated dataset lives."""

    root: Path
    pool_urls: list[str]
    val_urls: list[str]
    labels_path: Path
    summary: dict[str, Any]

    @classmethod
    def read(cls: type[A], root: Path) -> A:
        """The artifacts of the dataset materialised at ``root``."""
        return cls(
            root=root,
            pool_urls=sorted(str(p) for p in root.glob("pool-*.tar")),
            val_urls=sorted(str(p) for p in root.glob("val-*.tar")),
            labels_path=root / "labels.parquet",
            summary=json.loads((root / "summary.json").read_text()),
        )


def png_bytes(image: Image.Image, compress_level: int = 6, text: Optional[dict[str, str]] = None) -> bytes:
    """``image`` as PNG bytes at ``compress_level``, with ``text`` as tEXt chunks (other bytes, same pixels)."""
    info = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level, pnginfo=info)
    return buffer.getvalue()


def validate_generated_config(cfg: Any, section: str, kinds: Sequence[str]) -> None:
    """One-line :class:`ConfigError` naming the first bad common key of ``data.<section>``
    (``defects`` against ``kinds``, ``resolution``, the sizes)."""
    unknown = set(cfg.defects) - set(kinds)
    if unknown:
        raise ConfigError(f"config 'data.{section}.defects': unknown kinds {sorted(unknown)}; valid: {list(kinds)}")
    if any(v < 0 for v in cfg.defects.values()) or sum(cfg.defects.values()) >= 1.0:
        raise ConfigError(f"config 'data.{section}.defects': shares must be >= 0 and sum to less than 1")
    if cfg.resolution not in (32, 64, 128):
        raise ConfigError(f"config 'data.{section}.resolution': got {cfg.resolution}, use 32, 64 or 128")
    if cfg.num_pool <= 0 or cfg.num_val <= 0 or cfg.shard_size <= 0:
        raise ConfigError(f"config 'data.{section}': num_pool, num_val and shard_size must be positive")


def fingerprint(identity: dict[str, Any]) -> str:
    """12 hex digits naming what determines a dataset's bytes (its cache folder's suffix)."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def cache_folder(name: str, resolution: int, identity: dict[str, Any], cache_dir: Optional[str] = None) -> Path:
    """``<cache>/<name>/<name>-<resolution>px-<fingerprint>`` (or under ``cache_dir``); it may not exist yet."""
    base = Path(cache_dir).expanduser() if cache_dir else cache_root() / name
    return base / f"{name}-{resolution}px-{fingerprint(identity)}"


# ----------------------------------------------------------------------------- seeding and the plan


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: seeded by (seed, split, index), so any sample is drawn alone."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def sample_key(split: str, index: int) -> str:
    """``p0000042`` / ``v0000042``."""
    return f"{split[0]}{index:07d}"


def defect_plan(num_pool: int, seed: int, defects: dict[str, float], kinds: Sequence[str]) -> np.ndarray:
    """The defect kind of every pool index (exactly ``round(share * num_pool)`` of each kind, in ``kinds``
    order over one seeded permutation; the rest :data:`CLEAN`)."""
    plan = np.full(num_pool, CLEAN, dtype=object)
    order = np.random.default_rng([seed, 7]).permutation(num_pool)
    start = 0
    for kind in kinds:
        count = int(round(defects.get(kind, 0.0) * num_pool))
        plan[order[start : start + count]] = kind
        start += count
    return plan


def degrade(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Heavy blur or an 8x downscale (half each): the image and which (``"blur"``/``"downscale"``)."""
    resolution = image.size[0]
    if rng.random() < 0.5:
        return image.filter(ImageFilter.GaussianBlur(radius=resolution / 16)), "blur"
    small = max(resolution // 8, 2)
    low = image.resize((small, small), Image.Resampling.BILINEAR).resize((resolution, resolution), Image.Resampling.NEAREST)
    return low, "downscale"


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ShardJob:
    """One tar shard to write: its samples' indices, their kinds and plan entries (only this shard's,
    so the job pickles small and shards stay independent)."""

    path: str
    split: str
    indices: list[int]
    kinds: list[str]
    plan: dict[int, Any]


def shard_jobs(split: str, n: int, shard_size: int, folder: Path,
               kinds: Optional[np.ndarray] = None, plan: Optional[dict[int, Any]] = None) -> list[ShardJob]:
    """``<split>-000000.tar``, ... of ``shard_size`` consecutive indices each; ``kinds=None``: all clean."""
    plan = plan or {}
    jobs = []
    for s, start in enumerate(range(0, n, shard_size)):
        indices = list(range(start, min(start + shard_size, n)))
        jobs.append(ShardJob(
            path=str(folder / f"{split}-{s:06d}.tar"),
            split=split,
            indices=indices,
            kinds=[CLEAN if kinds is None else kinds[i] for i in indices],
            plan={i: plan[i] for i in indices if i in plan},
        ))
    return jobs


def _write_shard(make: MakeSample, job: ShardJob) -> tuple[str, int]:
    with wds.TarWriter(job.path) as sink:
        for index, kind in zip(job.indices, job.kinds):
            sink.write(make(job.split, index, kind, job.plan.get(index)))
    return job.path, len(job.indices)


def write_shards(jobs: Sequence[ShardJob], make: MakeSample, workers: Optional[int] = None) -> None:
    """Write every job's shard, in a fork pool of ``workers`` (default: one per shard, at most one per CPU).

    ``make`` must pickle (a module-level function, or a :func:`functools.partial` of one).
    """
    n_workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    write = partial(_write_shard, make)
    if n_workers > 1:
        with get_context("fork").Pool(n_workers) as pool:
            list(pool.imap_unordered(write, jobs))
    else:
        for job in jobs:
            write(job)


def materialise(root: Path, build: Callable[[Path], None]) -> Path:
    """Make the dataset at ``root`` once: ``build(folder)`` fills a temporary sibling folder (ending with
    its ``summary.json``), which is then renamed into place, so concurrent processes never see a partial
    dataset. An existing ``root/summary.json`` means it is done; if another process renamed its folder in
    first, theirs is kept. Returns ``root``."""
    if (root / "summary.json").exists():
        return root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def read_labels(path: os.PathLike | str) -> dict[str, str]:
    """``key -> defect kind`` from ``labels.parquet`` (evaluation and benchmarks only)."""
    table = pq.read_table(path)
    return dict(zip(table.column("key").to_pylist(), table.column("defect").to_pylist()))
