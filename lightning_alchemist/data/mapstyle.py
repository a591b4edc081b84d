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
        shard_ids, rows, counts = [], [], []
        self._indices: list[ShardIndex] = []
        first_shard: dict[str, int] = {}  # key -> the shard of its first copy
        dups: dict[str, list[str]] = {}  # duplicated key -> every shard holding it
        #: (shard url, key) of the later copies of duplicated keys, left out of this dataset
        self.skipped_duplicates: set[tuple[str, str]] = set()
        for sid, url in enumerate(self.urls):
            index = load_shard_index(url, self.index_stats)
            self._indices.append(index)
            kept = []
            for r, k in enumerate(index.keys):
                if key_filter is not None and not key_filter(k):
                    continue
                owner = first_shard.setdefault(k, sid)
                if owner != sid:
                    dups.setdefault(k, [self.urls[owner]]).append(url)
                    self.skipped_duplicates.add((url, k))
                    continue
                kept.append(r)
            keys.extend(index.keys[r] for r in kept)
            captions.extend(index.captions[r] for r in kept)
            shard_ids.append(np.full(len(kept), sid, dtype=np.int32))
            rows.append(np.asarray(kept, dtype=np.int64))
            counts.append(len(kept))
        self.keys: list[str] = keys
        self.captions: list[str] = captions
        self._shard_of = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        self._row_of = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.shards = [ShardInfo(u, shard_stem(u), n) for u, n in zip(self.urls, counts)]
        if dups:
            n = len(self.skipped_duplicates)
            if duplicates == "error":
                raise DataError(duplicate_message("data", dups, f"{n} later copies would be read twice"))
            log.warning(duplicate_message("data", dups, f"{n} later copies are not counted as samples (first copy kept)"))
            self.index_stats.add("duplicate_key", n, list(dups))
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

    def __getitem__(self, i: int) -> Optional[Sample]:
        if i < 0:
            i += len(self)
        return self.decoder(self.raw(i))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, -1  # file handles do not pickle (spawned workers)
        return state
