"""``data=laion``: img2dataset output read in place (``{shard:05d}.tar`` + ``.parquet`` + ``_stats.json``).

The per-shard parquet is the key index: it has a row for every attempted URL, and only rows with
``status == "success"`` are samples (the others are counted by status, with their error message).
The tars are read as they are (no copy): each sample's ``.json``, written by img2dataset, already
carries the parquet's metadata columns (similarity, AESTHETIC_SCORE, pwatermark, width, height, …),
so they travel with the sample. A tar without its parquet is left out (counted as ``no_parquet``:
read plain shards with ``data=wds``); a success row with no usable sample in the tar is counted as
``not_in_tar``, a tar sample with no success row as ``not_in_parquet`` (not a sample).

Keys and counts are cached under ``<cache>/layouts/laion-<fingerprint>/`` (the success keys as
sorted 64-bit hashes, 8 bytes per key). Map-style reading still needs each tar's member offsets:
those come from the shard index (one scan of the tar headers, cached), which preparation builds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.config import DataConfig
from lightning_alchemist.data.layouts.convert import Prepared, Skips, announce, file_stat, fingerprint, layout_folder
from lightning_alchemist.data.split import HeldOutSplit
from lightning_alchemist.errors import DataError
from lightning_alchemist.paths import file_lock
from lightning_alchemist.selection.ratings import key_hash, key_hashes

log = logging.getLogger(__name__)


class KeyIndexSplit(HeldOutSplit):
    """A held-out split restricted to the keys of an index: a key outside it is in neither split.

    The keys are held as sorted 64-bit hashes (picklable, shared copy-on-write with forked workers).
    """

    def __init__(self, fraction: float, seed: int, hashes: np.ndarray) -> None:
        super().__init__(fraction, seed)
        self.hashes = np.sort(np.asarray(hashes, dtype=np.uint64))

    def known(self, key: str) -> bool:
        h = np.uint64(key_hash(key))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    def is_val(self, key: str) -> bool:
        return self.known(key) and super().is_val(key)

    def is_pool(self, key: str) -> bool:
        return self.known(key) and not super().is_val(key)

    def __repr__(self) -> str:
        return f"KeyIndexSplit(keys={len(self.hashes)}, fraction={self.fraction}, seed={self.seed})"


def _files(cfg: DataConfig) -> tuple[Path, list[Path], list[Path]]:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; pass img2dataset's output folder ({{shard}}.tar + .parquet)")
    tars = sorted(root.glob("*.tar"))
    parquets = sorted(p for p in root.glob("*.parquet") if not p.name.endswith(".index.parquet"))
    if not tars and not parquets:
        raise DataError(f"data.root: no img2dataset shards ({{shard}}.tar + {{shard}}.parquet) in {root}")
    return root, tars, parquets


def identity(cfg: DataConfig) -> dict[str, Any]:
    _, tars, parquets = _files(cfg)
    return {"layout": "laion", "tars": [file_stat(p) for p in tars], "parquets": [file_stat(p) for p in parquets]}


def _read_index(path: Path) -> pa.Table:
    names = pq.read_schema(path).names
    if "key" not in names or "status" not in names:
        raise DataError(f"data.root: {path} lacks img2dataset's 'key'/'status' columns (has {names[:10]}); "
                        "is this img2dataset output? plain shards read with data=wds")
    cols = ["key", "status"] + (["error_message"] if "error_message" in names else [])
    return pq.read_table(path, columns=cols)


def _build(root: Path, tars: list[Path], parquets: list[Path], skips: Skips) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    from lightning_alchemist.data.index import load_shard_index

    by_stem = {p.stem: p for p in parquets}
    tar_stems = {t.stem for t in tars}
    shards: list[str] = []
    keys: list[str] = []
    rows = failed = 0
    for stem, path in by_stem.items():
        if stem in tar_stems:
            continue
        table = _read_index(path)
        for key, status in zip(table.column("key").to_pylist(), table.column("status").to_pylist()):
            if status == "success":
                skips.add("missing_tar", str(key), f"{path.name} has no {stem}.tar beside it")
    for tar in tars:
        path = by_stem.get(tar.stem)
        if path is None:
            skips.add("no_parquet", tar.name, "img2dataset writes one .parquet per .tar; the shard is left out")
            continue
        table = _read_index(path)
        rows += table.num_rows
        status = table.column("status").to_pylist()
        errors = table.column("error_message").to_pylist() if "error_message" in table.column_names else [None] * len(status)
        success = []
        for key, st, err in zip(table.column("key").to_pylist(), status, errors):
            if st == "success":
                success.append(str(key))
            else:
                failed += 1
                skips.add(f"status={st}", str(key), str(err or ""))
        in_tar = set(load_shard_index(str(tar)).keys)
        wanted = set(success)
        for key in success:
            if key not in in_tar:
                skips.add("not_in_tar", key, f"a success row of {path.name} with no image+caption sample in {tar.name}")
        for key in sorted(in_tar - wanted):
            skips.add("not_in_parquet", key, f"in {tar.name} but not a success row of {path.name}")
        keys.extend(k for k in success if k in in_tar)
        shards.append(str(tar))
    stats = {"rows": rows, "failed": failed}
    for stats_file in sorted(root.glob("*_stats.json")):
        try:
            data = json.loads(stats_file.read_text())
        except (OSError, ValueError):
            continue
        for name in ("count", "successes"):
            if isinstance(data.get(name), int):
                stats[f"stats_{name}"] = stats.get(f"stats_{name}", 0) + data[name]
    hashes = np.sort(key_hashes(pa.chunked_array([pa.array(keys, pa.string())]))) if keys else np.zeros(0, np.uint64)
    return shards, hashes, stats


def prepare(cfg: DataConfig) -> tuple[Prepared, np.ndarray]:
    """The img2dataset folder's shards and its success keys (hashes), counted and cached by fingerprint."""
    ident = identity(cfg)
    root, tars, parquets = _files(cfg)
    folder = layout_folder("laion", fingerprint(ident), cfg.cache_dir)
    cached = True
    with file_lock(folder.with_name(folder.name + ".lock")):
        if not (folder / "prepared.json").is_file():
            cached = False
            start = time.perf_counter()
            skips = Skips()
            shards, hashes, stats = _build(root, tars, parquets, skips)
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "keys.npy", hashes)
            summary = {"name": "laion", "pool_shards": shards, "val_shards": [], "samples": {"pool": int(len(hashes))},
                       "skips": skips.to_dict(), "seconds": round(time.perf_counter() - start, 2),
                       "info": {"root": str(root), **stats}}
            tmp = folder / "prepared.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            os.replace(tmp, folder / "prepared.json")
    data = json.loads((folder / "prepared.json").read_text())
    prepared = Prepared(name="laion", folder=root, pool_urls=list(data["pool_shards"]), val_urls=[],
                        samples=data["samples"], skips=Skips.from_dict(data["skips"]), info=data["info"])
    announce(prepared, cached=cached)
    if not prepared.pool_urls:
        raise DataError(f"data.root: no img2dataset shard of {root} has both its .tar and .parquet; {prepared.skips.summary()}")
    return prepared, np.load(folder / "keys.npy")


__all__ = ["KeyIndexSplit", "identity", "prepare"]
