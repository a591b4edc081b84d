"""Writing the pruned dataset back: the selected samples as new webdataset shards, with their scores beside them.

The DataComp / NeMo Curator contract: a team that pruned its pool gets files its own training reads,
not only a manifest for our callback. :func:`write_pruned` reads a dataset (any ``data`` config) and a
``selection.parquet`` and writes, into a new folder:

- ``pruned-000000.tar`` … : the kept samples in the source's order, ``shard_size`` per shard, keys kept,
  each with its image, ``.txt`` and ``.json`` (the source metadata plus ``rating`` and ``weight``);
- ``ratings.parquet``: ``key, shard, rating, weight`` for every written sample (``rating`` is null
  without ``ratings``);
- ``writeback.json``: the plan's fingerprint and the counts.

Each output shard is written atomically (temp file + rename, then a ratings part marks it done), in
parallel; a rerun of the same command after a kill skips finished shards and redoes the rest, so the
result has no duplicate and no missing key. Nothing is written into the source's folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.config import DataConfig
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.paths import write_atomic

__all__ = ["WritebackConfig", "WritebackResult", "run_write_pruned", "write_pruned", "writeback_config"]

log = logging.getLogger(__name__)

WRITEBACK_VERSION = 1
PARTS = ".parts"


@dataclass
class WritebackConfig:
    """Schema of ``conf/write_pruned.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    # The selection manifest (selection.parquet, or the folder holding it). Required; the recipe maps selection=PATH here.
    selection_path: Optional[str] = None
    # Ratings folder (the scorer's ratings/) or file: each sample's rating goes to its .json and ratings.parquet.
    ratings: Optional[str] = None
    # The new dataset's folder (must not be inside the source's folders). Required.
    out: Optional[str] = None
    shard_size: int = 10_000
    prefix: str = "pruned"
    # Writer processes; null = one per core, at most 8.
    workers: Optional[int] = None
    seed: int = 0


def writeback_config(cfg: Any) -> WritebackConfig:
    """Validate a composed ``write_pruned`` config (one-line errors); the data group as in every recipe."""
    from lightning_alchemist.config import as_container, data_config, to_dataclass

    node = as_container(cfg)
    node = {k: v for k, v in node.items() if k in WritebackConfig.__dataclass_fields__}
    data = node.pop("data", None)
    conf = to_dataclass(node, WritebackConfig, "write_pruned")
    conf.data = data_config(data)
    if not conf.selection_path:
        raise ConfigError("config 'selection' is required: pass selection=DIR/selection.parquet (recipes/select_data.py or train.py writes one)")
    if not conf.out:
        raise ConfigError("config 'out' is required: pass out=DIR, a new folder for the pruned shards")
    if conf.shard_size <= 0:
        raise ConfigError(f"config 'shard_size': got {conf.shard_size}, expected a positive number of samples per shard")
    if "/" in conf.prefix or not conf.prefix:
        raise ConfigError(f"config 'prefix': got {conf.prefix!r}, expected a file-name prefix such as 'pruned'")
    return conf


@dataclass
class WritebackResult:
    """Where the pruned dataset went and what was written."""

    out: Path
    shards: list[str]
    samples: int
    missing: int
    reused_shards: int
    seconds: float

    def summary(self) -> str:
        return (f"wrote {self.samples} samples in {len(self.shards)} shards to {self.out} "
                f"({self.reused_shards} shards reused from an earlier run; {self.missing} selected keys not in the dataset)")


def _source_folders(datamodule: Any) -> list[Path]:
    folders = {Path(u).resolve().parent for u in datamodule.source.pool_urls + datamodule.source.val_urls if "://" not in u}
    root = getattr(datamodule.cfg, "root", None)
    if root:
        folders.add(Path(root).expanduser().resolve())
    return sorted(folders)


def _check_out(out: Path, datamodule: Any) -> None:
    resolved = out.resolve()
    for folder in _source_folders(datamodule):
        if resolved == folder or folder in resolved.parents:
            raise ConfigError(f"config 'out': {out} is inside the source's folder {folder}; "
                              "the pruned set goes to a new folder (the source is never written to)")


# The dataset and the plan, set before forking so workers inherit them instead of receiving pickles.
_STATE: dict[str, Any] = {}


def _write_shard(job: tuple[int, np.ndarray]) -> tuple[int, int]:
    import webdataset as wds

    j, positions = job
    pool, out, prefix = _STATE["pool"], _STATE["out"], _STATE["prefix"]
    weights, ratings = _STATE["weights"], _STATE["ratings"]
    name = f"{prefix}-{j:06d}.tar"
    keys, shard_weights, shard_ratings = [], [], []

    def write_tar(tmp: Path) -> None:
        with wds.TarWriter(str(tmp)) as sink:
            for i in positions.tolist():
                raw = pool.raw(i)
                key = raw["__key__"]
                meta: dict[str, Any] = {}
                if raw.get("json") is not None:
                    try:
                        loaded = json.loads(raw["json"].decode("utf-8", errors="replace"))
                        meta = loaded if isinstance(loaded, dict) else {"value": loaded}
                    except ValueError:
                        meta = {}
                rating = ratings.get(key) if ratings is not None else None
                weight = float(weights[key])
                meta["rating"], meta["weight"] = rating, weight
                sample = {k: v for k, v in raw.items() if not k.startswith("__") and k != "json"}
                sample["__key__"] = key
                sample["json"] = json.dumps(meta).encode()
                sink.write(sample)
                keys.append(key)
                shard_weights.append(weight)
                shard_ratings.append(rating)

    write_atomic(out / name, write_tar, tmp=out / f"{name}.{os.getpid()}.tmp")
    part = pa.table({"key": pa.array(keys, pa.string()), "shard": pa.array([name] * len(keys), pa.string()),
                     "rating": pa.array(shard_ratings, pa.float64()), "weight": pa.array(shard_weights, pa.float64())})
    parts = out / PARTS
    # last: marks the shard done
    write_atomic(parts / f"{name}.parquet", lambda t: pq.write_table(part, t), tmp=parts / f"{name}.parquet.{os.getpid()}.tmp")
    return j, len(keys)


def write_pruned(datamodule: Any, selection: Any, out: str | os.PathLike, *, ratings: Any = None, shard_size: int = 10_000,
                 prefix: str = "pruned", workers: Optional[int] = None,
                 on_shard: Optional[Callable[[int, int], None]] = None) -> WritebackResult:
    """Write the samples of ``selection`` (weight > 0) found in ``datamodule``'s pool as new shards under ``out``.

    Args:
        datamodule: a :class:`~lightning_alchemist.data.datamodule.T2IDataModule` (any dataset or layout).
        selection: a :class:`~lightning_alchemist.selection.manifest.Selection`.
        out: a new folder, not inside the source's folders.
        ratings: a :class:`~lightning_alchemist.selection.ratings.Ratings` for each sample's ``rating`` (else null).
        shard_size: samples per output shard (the last one may hold fewer).
        workers: parallel writer processes (default: one per core, at most 8).
        on_shard: called with ``(shard index, shards done)`` after each finished shard (progress hooks).

    Raises:
        DataError: no selected key is in the dataset, or ``out`` holds a write-back of another plan.
        ConfigError: ``out`` is inside the source's folders, or is a non-empty folder without a write-back.
    """
    from lightning_alchemist.data.layouts.convert import default_workers

    start = time.perf_counter()
    out = Path(out)
    _check_out(out, datamodule)
    pool = datamodule.pool
    weights = dict(zip(selection.keys.to_pylist(), selection.weights.tolist()))
    positions = np.fromiter((i for i, k in enumerate(pool.keys) if weights.get(k, 0.0) > 0), dtype=np.int64)
    wanted = sum(1 for w in weights.values() if w > 0)
    missing = wanted - len(positions)
    if len(positions) == 0:
        raise DataError(f"selection: none of its {wanted} keys is in the pool of data '{datamodule.cfg.name}' "
                        f"({len(pool)} samples); was it made for another dataset?")
    if missing:
        log.warning("write-back: %d of the %d selected keys are not in the dataset (skipped)", missing, wanted)
    rating_of: Optional[dict[str, float]] = None
    rating_fp = None
    if ratings is not None:
        chosen = {pool.keys[i] for i in positions.tolist()}
        rating_of = {k: float(r) for k, r in zip(ratings.keys.to_pylist(), ratings.ratings.tolist()) if k in chosen}
        rating_fp = ratings.fingerprint
    plan = {"v": WRITEBACK_VERSION, "selection": selection.fingerprint, "ratings": rating_fp, "shard_size": shard_size,
            "prefix": prefix, "keys": hashlib.sha1("\n".join(pool.keys[i] for i in positions.tolist()).encode()).hexdigest()}
    plan_fp = hashlib.sha1(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    manifest = out / "writeback.json"
    if out.is_dir() and not manifest.is_file() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ConfigError(f"config 'out': {out} is not empty and holds no earlier write-back; "
                          "pick a new folder (its *.tar must be only the pruned shards)")
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    if manifest.is_file():
        earlier = json.loads(manifest.read_text())
        if earlier.get("plan") != plan_fp:
            raise DataError(f"config 'out': {out} holds a write-back of another selection, dataset or shard size "
                            f"(plan {earlier.get('plan')}, this one {plan_fp}); pick a new folder or delete it")
    else:
        tmp = out / "writeback.json.tmp"
        tmp.write_text(json.dumps({"plan": plan_fp, **plan, "complete": False}, indent=2))
        os.replace(tmp, manifest)
    for stale in out.glob("*.tmp"):  # left by a killed run
        stale.unlink()
    for stale in (out / PARTS).glob("*.tmp"):
        stale.unlink()
    jobs = [(j, positions[s : s + shard_size]) for j, s in enumerate(range(0, len(positions), shard_size))]
    names = [f"{prefix}-{j:06d}.tar" for j, _ in jobs]
    done = {j for j, _ in jobs if (out / PARTS / f"{names[j]}.parquet").is_file() and (out / names[j]).is_file()}
    todo = [job for job in jobs if job[0] not in done]
    n = default_workers(workers, len(todo))
    print(f"write-back: {len(positions)} selected samples of data '{datamodule.cfg.name}' -> {len(jobs)} shards in {out} "
          f"({len(done)} already written; {n} processes)", flush=True)
    _STATE.update(pool=pool, out=out, prefix=prefix, weights=weights, ratings=rating_of)
    finished = len(done)
    written = 0

    def progress(j: int, count: int) -> None:
        nonlocal finished, written
        finished += 1
        written += count
        if finished == len(jobs) or finished % max(1, len(jobs) // 10) == 0:
            rate = written / max(time.perf_counter() - start, 1e-9)
            print(f"write-back: {finished}/{len(jobs)} shards ({rate:.0f} samples/s)", flush=True)
        if on_shard is not None:
            on_shard(j, finished)

    try:
        if n > 1:
            with get_context("fork").Pool(n) as workers_pool:
                for j, count in workers_pool.imap_unordered(_write_shard, todo):
                    progress(j, count)
        else:
            for job in todo:
                progress(*_write_shard(job))
    finally:
        _STATE.clear()
    parts = [out / PARTS / f"{name}.parquet" for name in names]
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    write_atomic(out / "ratings.parquet", lambda t: pq.write_table(table, t), tmp=out / "ratings.parquet.tmp")
    result = WritebackResult(out=out, shards=names, samples=table.num_rows, missing=missing, reused_shards=len(done),
                             seconds=time.perf_counter() - start)
    tmp = out / "writeback.json.tmp"
    tmp.write_text(json.dumps({"plan": plan_fp, **plan, "complete": True, "samples": result.samples, "shards": names,
                               "missing_keys": missing, "source": datamodule.cfg.name}, indent=2))
    os.replace(tmp, manifest)
    print("write-back: " + result.summary(), flush=True)
    return result


def run_write_pruned(cfg: Any) -> WritebackResult:
    """The recipe: validate, read the selection (and ratings), write the pruned shards."""
    from lightning_alchemist.data.datamodule import T2IDataModule
    from lightning_alchemist.selection.manifest import Selection
    from lightning_alchemist.selection.ratings import Ratings

    conf = writeback_config(cfg)
    selection = Selection.read(conf.selection_path)
    ratings = Ratings.read(conf.ratings) if conf.ratings else None
    datamodule = T2IDataModule(conf.data, seed=conf.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return write_pruned(datamodule, selection, conf.out, ratings=ratings, shard_size=conf.shard_size, prefix=conf.prefix,
                        workers=conf.workers)
