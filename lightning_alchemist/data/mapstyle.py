"""A map-style dataset over webdataset shards, addressed by index and by key."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from lightning_alchemist.data.decode import SampleDecoder, SkipStats
from lightning_alchemist.errors import DataError
from lightning_alchemist.data.index import ShardIndex, load_shard_index
from lightning_alchemist.data.sample import Sample
from lightning_alchemist.data.shards import shard_stem

log = logging.getLogger(__name__)

DUPLICATES = ("skip", "error")
_SHOWN = 3  # duplicated keys named in the one-line message


def duplicate_message(what: str, dups: dict[str, list[str]], outcome: str) -> str:
    """One line naming the first few duplicated keys with the shards holding each, then a count."""
    shown = "; ".join(f"'{k}' in {', '.join(os.path.basename(u) for u in urls)}" for k, urls in list(dups.items())[:_SHOWN])
    more = f"; and {len(dups) - _SHOWN} more keys" if len(dups) > _SHOWN else ""
    return f"{what}: {len(dups)} keys appear in more than one shard ({shown}{more}); {outcome}: remove or re-key the duplicates"


@dataclass(frozen=True)
class ShardInfo:
    """A shard and how many samples of this dataset it holds."""

    path: str
    stem: str
    num_samples: int


def duplicate_positions(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(later, every)``: positions of each copy of a key after its first, and of all copies of those keys.

    Sorts 64-bit hashes (8 bytes a key, not a dict of every key: pools of 100M samples), then
    confirms the few hash matches exactly. Both arrays are ascending.
    """
    empty = np.zeros(0, np.int64)
    if len(keys) < 2:
        return empty, empty
    hashes = np.fromiter((hash(k) for k in keys), dtype=np.int64, count=len(keys))
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return empty, empty
    candidates = np.unique(np.concatenate([order[1:][same], order[:-1][same]])).tolist()  # every copy is one
    seen: set[str] = set()
    later = []
    for pos in candidates:
        if keys[pos] in seen:
            later.append(pos)
        else:
            seen.add(keys[pos])
    duplicated = {keys[p] for p in later}
    every = [p for p in candidates if keys[p] in duplicated]
    return np.asarray(later, dtype=np.int64), np.asarray(every, dtype=np.int64)


class ShardDataset(Dataset):
    """Random access to the samples of webdataset shards through a cached per-shard index.

    Sample ``i`` has key ``keys[i]``; samples keep shard order. ``__getitem__`` returns ``None``
    for a sample whose image cannot be decoded (counted in :attr:`stats`);
    :func:`~lightning_alchemist.data.sample.collate_samples` drops it, exactly as the streaming
    style skips it.

    Args:
        urls: expanded shard paths.
        decoder: turns raw members into a ``Sample`` (shared with the streaming style).
        key_filter: keep only keys for which it returns True (e.g. the pool side of a split).
        duplicates: a key held by several shards is found while indexing: ``"skip"`` keeps its
            first copy (shard order), counts the others in :attr:`index_stats` (``duplicate_key``)
            and logs one warning naming the shards; ``"error"`` raises :class:`DataError` instead.
    """

    def __init__(
        self,
        urls: Sequence[str],
        decoder: SampleDecoder,
        key_filter: Optional[Callable[[str], bool]] = None,
        duplicates: str = "skip",
    ) -> None:
        if duplicates not in DUPLICATES:
            raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
        self.urls = list(urls)
        self.decoder = decoder
        self.index_stats = SkipStats()
        keys: list[str] = []
        captions: list[str] = []
        shard_ids, rows = [], []
        self._indices: list[ShardIndex] = []
        for sid, url in enumerate(self.urls):
            index = load_shard_index(url, self.index_stats)
            self._indices.append(index)
            kept = [r for r, k in enumerate(index.keys) if key_filter is None or key_filter(k)]
            keys.extend(index.keys[r] for r in kept)
            captions.extend(index.captions[r] for r in kept)
            shard_ids.append(np.full(len(kept), sid, dtype=np.int32))
            rows.append(np.asarray(kept, dtype=np.int64))
        shard_of = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        row_of = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        #: (shard url, key) of the later copies of duplicated keys, left out of this dataset
        self.skipped_duplicates: set[tuple[str, str]] = set()
        later, every = duplicate_positions(keys)
        if len(later):
            dups: dict[str, list[str]] = {}  # duplicated key -> every shard holding it, in order
            for pos in every.tolist():
                dups.setdefault(keys[pos], []).append(self.urls[shard_of[pos]])
            self.skipped_duplicates = {(self.urls[shard_of[p]], keys[p]) for p in later.tolist()}
            n = len(later)
            if duplicates == "error":
                raise DataError(duplicate_message("data", dups, f"{n} later copies would be read twice"))
            log.warning(duplicate_message("data", dups, f"{n} later copies are not counted as samples (first copy kept)"))
            self.index_stats.add("duplicate_key", n, list(dups))
            keep = np.ones(len(keys), dtype=bool)
            keep[later] = False
            keys = [k for k, ok in zip(keys, keep.tolist()) if ok]
            captions = [c for c, ok in zip(captions, keep.tolist()) if ok]
            shard_of, row_of = shard_of[keep], row_of[keep]
        self.keys: list[str] = keys
        self.captions: list[str] = captions
        self._shard_of = shard_of
        self._row_of = row_of
        counts = np.bincount(shard_of, minlength=len(self.urls)).tolist()
        self.shards = [ShardInfo(u, shard_stem(u), n) for u, n in zip(self.urls, counts)]
        self._files: dict[int, object] = {}
        self._pid = -1

    @property
    def stats(self) -> SkipStats:
        """Skips seen while decoding (per process: each DataLoader worker counts its own)."""
        return self.decoder.stats

    def __len__(self) -> int:
        return len(self.keys)

    def keys_by_shard(self) -> dict[str, list[str]]:
        """The keys of this dataset grouped by shard stem (shard order), e.g. to check ratings cover it."""
        out: dict[str, list[str]] = {info.stem: [] for info in self.shards}
        stems = [info.stem for info in self.shards]
        for key, sid in zip(self.keys, self._shard_of.tolist()):
            out[stems[sid]].append(key)
        return out

    def shard_index_of(self, i: int) -> int:
        """Position in :attr:`shards` of the shard holding sample ``i``."""
        return int(self._shard_of[i])

    def _file(self, sid: int):
        if self._pid != os.getpid():  # fresh handles after fork (DataLoader workers, DDP)
            self._files, self._pid = {}, os.getpid()
        handle = self._files.get(sid)
        if handle is None:
            handle = self._files[sid] = open(self.urls[sid], "rb")
        return handle

    def _read(self, sid: int, offset: int, size: int) -> bytes:
        handle = self._file(sid)
        handle.seek(offset)
        return handle.read(size)

    def raw(self, i: int) -> dict:
        """The raw member dict of sample ``i`` (as webdataset would yield it, before decoding)."""
        sid, row = int(self._shard_of[i]), int(self._row_of[i])
        index = self._indices[sid]
        raw = {
            "__key__": index.keys[row],
            "__url__": self.urls[sid],
            index.image_ext[row]: self._read(sid, int(index.image_offset[row]), int(index.image_size[row])),
            "txt": index.captions[row].encode(),
        }
        if index.json_offset[row] >= 0:
            raw["json"] = self._read(sid, int(index.json_offset[row]), int(index.json_size[row]))
        return raw

    def meta(self, i: int) -> dict:
        """The parsed ``.json`` member of sample ``i`` (empty when absent or unreadable), without reading its image."""
        import json

        sid, row = int(self._shard_of[i]), int(self._row_of[i])
        index = self._indices[sid]
        if index.json_offset[row] < 0:
            return {}
        try:
            loaded = json.loads(self._read(sid, int(index.json_offset[row]), int(index.json_size[row])).decode("utf-8", "replace"))
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {"value": loaded}

    def __getitem__(self, i: int) -> Optional[Sample]:
        if i < 0:
            i += len(self)
        return self.decoder(self.raw(i))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, -1  # file handles do not pickle (spawned workers)
        return state
