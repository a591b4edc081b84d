"""The on-disk feature cache: one folder per (split, shard), written atomically, read by key.

``<root>/<split>/<shard>/keys.parquet`` holds the shard's keys (row order) with the fingerprint and
each tensor's dtype and shape in its schema metadata; ``<name>.npy`` holds that tensor's rows. Arrays
are memory-mapped on read, so a pool larger than memory costs only its keys in RAM.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from lightning_alchemist.errors import AlchemistError

__all__ = ["FeatureStore", "find_store", "finished_feature_shards", "remove_stale_temporaries", "write_feature_shard", "KEYS_FILE", "META_KEY"]

log = logging.getLogger(__name__)

KEYS_FILE = "keys.parquet"
META_KEY = b"lightning_alchemist.features"


def _to_numpy(t: Tensor) -> tuple[np.ndarray, str]:
    """A tensor as a numpy array for ``.npy`` plus the torch dtype to restore (bf16 kept as its bits)."""
    t = t.detach().cpu().contiguous()
    dtype = str(t.dtype).replace("torch.", "")
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy(), dtype
    if t.dtype in (torch.int64, torch.int32) and t.numel():
        lo, hi = int(t.min()), int(t.max())
        for small in (torch.int16, torch.int32):  # token ids (vocab 4096: int16): a quarter of the bytes, the same values
            info = torch.iinfo(small)
            if info.min <= lo and hi <= info.max and info.bits < torch.iinfo(t.dtype).bits:
                return t.to(small).numpy(), dtype
    return t.numpy(), dtype


def _from_numpy(a: np.ndarray, dtype: str) -> Tensor:
    t = torch.from_numpy(np.array(a))  # a copy: memory-mapped rows are read-only
    if dtype == "bfloat16":
        return t.view(torch.bfloat16)
    want = getattr(torch, dtype)
    return t if t.dtype == want else t.to(want)


def write_feature_shard(folder: Path, keys: Sequence[str], tensors: Mapping[str, Tensor | np.ndarray], fingerprint: str) -> None:
    """Write one shard's features atomically: a temporary sibling folder, then ``os.replace`` onto ``folder``.

    ``tensors`` are batch-first with ``len(keys)`` rows each (torch tensors, or numpy rows already stacked).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{_HOST}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    spec: dict[str, Any] = {}
    for name, value in tensors.items():
        arr, dtype = _to_numpy(value if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value)))
        if arr.shape[0] != len(keys):
            raise AlchemistError(f"features '{name}' of shard {folder.name}: {arr.shape[0]} rows for {len(keys)} keys")
        np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        spec[name] = {"dtype": dtype, "shape": list(arr.shape[1:])}
    meta = {META_KEY: json.dumps({"fingerprint": fingerprint, "tensors": spec}).encode()}
    pq.write_table(pa.table({"key": pa.array(list(keys), type=pa.string())}).replace_schema_metadata(meta), tmp / KEYS_FILE)
    if folder.exists():  # a stale folder of another fingerprint (overwrite): replace it whole
        shutil.rmtree(folder)
    os.replace(tmp, folder)


_HOST = socket.gethostname().replace("-", "_")


def remove_stale_temporaries(split_dir: Path) -> int:
    """Delete temporary shard folders left by killed encodes of this host (their process is gone); returns how many.

    A temporary folder names its host and process, so one that another node or a live process is writing is kept.
    """
    removed = 0
    split_dir = Path(split_dir)
    for tmp in split_dir.glob(".*.tmp-*") if split_dir.is_dir() else []:
        host, _, pid = tmp.name.rpartition(".tmp-")[2].rpartition("-")
        if host != _HOST or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive: still writing
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed += 1
    return removed


def _read_meta(folder: Path) -> Optional[dict]:
    try:
        raw = (pq.read_schema(folder / KEYS_FILE).metadata or {}).get(META_KEY)
    except Exception:  # a foreign or broken folder: re-encoding replaces it
        return None
    return json.loads(raw) if raw else None


def finished_feature_shards(split_dir: Path, fingerprint: str) -> set[str]:
    """Names of the shard folders under ``split_dir`` finished under ``fingerprint`` (others are re-encoded)."""
    done: set[str] = set()
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        return done
    for folder in sorted(split_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        meta = _read_meta(folder)
        if meta is not None and meta.get("fingerprint") == fingerprint:
            done.add(folder.name)
        else:
            log.warning("features %s: not written under fingerprint %s; it will be encoded again", folder, fingerprint)
    return done


class FeatureStore:
    """Read access to a feature cache by sample key.

    Args:
        root: the cache folder (``<root>/<split>/<shard>/``).
        fingerprint: if given, only shard folders written under it are read.

    Attributes:
        fingerprint: the store's fingerprint (of its first shard when none was given).
        encoders: the frozen encoders' digest it was written with (from ``root/features.json``; may be None).
        names: the stored tensor names; ``spec`` their dtypes and per-row shapes.
    """

    def __init__(self, root: str | Path, fingerprint: Optional[str] = None) -> None:
        self.root = Path(root)
        info_path = self.root / "features.json"
        self.info: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
        self.encoders: Optional[str] = self.info.get("encoders")
        self.fingerprint = fingerprint or self.info.get("fingerprint")
        self._folders: list[Path] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.spec: dict[str, dict] = {}
        for split_dir in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            for folder in sorted(split_dir.iterdir()):
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                meta = _read_meta(folder)
                if meta is None or (self.fingerprint is not None and meta.get("fingerprint") != self.fingerprint):
                    continue
                self.fingerprint = self.fingerprint or meta.get("fingerprint")
                self.spec = self.spec or dict(meta["tensors"])
                sid = len(self._folders)
                self._folders.append(folder)
                keys = pq.read_table(folder / KEYS_FILE, columns=["key"]).column("key").to_pylist()
                for row, key in enumerate(keys):
                    self._where.setdefault(key, (sid, row))  # a key in two splits: its first copy
        self.names = sorted(self.spec)
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def covers(self, keys: Iterable[str]) -> tuple[int, int]:
        """``(found, total)`` of ``keys`` in the store."""
        total = found = 0
        for k in keys:
            total += 1
            found += k in self._where
        return found, total

    def _array(self, sid: int, name: str) -> np.ndarray:
        if self._pid != os.getpid():  # memory maps are per process (DataLoader workers, DDP)
            self._arrays, self._pid = {}, os.getpid()
        arr = self._arrays.get((sid, name))
        if arr is None:
            arr = self._arrays[(sid, name)] = np.load(self._folders[sid] / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        return arr

    def row(self, key: str) -> Optional[dict[str, Tensor]]:
        """One sample's tensors (per-row shapes, original dtypes), or None when the key was not encoded."""
        where = self._where.get(key)
        if where is None:
            return None
        sid, row = where
        return {name: _from_numpy(self._array(sid, name)[row], self.spec[name]["dtype"]) for name in self.names}

    def rows(self, keys: Sequence[str]) -> dict[str, Tensor]:
        """The tensors of ``keys`` stacked ``[len(keys), ...]`` (every key must be in the store)."""
        missing = [k for k in keys if k not in self._where]
        if missing:
            raise AlchemistError(f"features {self.root}: {len(missing)} of {len(keys)} keys were not encoded (e.g. '{missing[0]}'); "
                                 "run the encode stage again (it resumes) or set features.use=off")
        out: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        for k in keys:
            sid, row = self._where[k]
            for name in self.names:
                out[name].append(self._array(sid, name)[row])
        return {name: _from_numpy(np.stack(v) if v else np.zeros((0, *self.spec[name]["shape"])), self.spec[name]["dtype"])
                for name, v in out.items()}

    def bytes_per_sample(self) -> int:
        """Stored bytes of one sample (all tensors)."""
        return shard_bytes_per_sample(self._folders[0]) if self._folders else 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"], state["_pid"] = {}, -1  # memory maps do not pickle (spawned workers)
        return state


def shard_bytes_per_sample(folder: str | Path) -> int:
    """Stored bytes of one sample of a shard folder (every tensor's row), read from the ``.npy`` headers."""
    total = 0
    for path in sorted(Path(folder).glob("*.npy")):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        total += int(arr.dtype.itemsize * int(np.prod(arr.shape[1:])))
    return total


def find_store(root: str | Path, encoders: str, data: str) -> Optional[FeatureStore]:
    """The finished feature cache under ``root`` (``<out>/cache/features``) written by ``encoders`` for ``data``
    (a :func:`~lightning_alchemist.features.encode.data_fingerprint`), or None."""
    root = Path(root)
    for info_path in sorted(root.glob("*/features.json")) if root.is_dir() else []:
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("encoders") == encoders and info.get("data") == data:
            return FeatureStore(info_path.parent, fingerprint=info.get("fingerprint"))
    return None
