"""The ratings table: one rating per sample key, read from the ``ratings/`` Parquet shards.

Contract (written by the scorer): ``DIR/ratings/<shard-stem>.parquet`` with columns ``key``
(string) and ``rating`` (float, higher = rated better/easier), possibly extra columns, and the
scoring-config fingerprint under the schema metadata key ``lightning_alchemist.fingerprint``.
Files ending in ``.parquet.tmp`` are being written and are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_alchemist.errors import DataError

__all__ = [
    "FINGERPRINT_KEY",
    "Coverage",
    "Ratings",
    "check_ratings_cover",
    "content_fingerprint",
    "duplicate_keys",
    "find_rating_files",
    "key_hash",
    "key_hashes",
]

FINGERPRINT_KEY = b"lightning_alchemist.fingerprint"
# The rater objective's declared ranking ends (JSON: objective, head easy|clean, tail), written by the scorer.
RANKING_KEY = b"lightning_alchemist.ranking"
THREADS_KEY = b"lightning_alchemist.torch_threads"  # the scorer's torch thread count (rater/writer.py)
PathLike = Union[str, os.PathLike]


def find_rating_files(source: Union[PathLike, Sequence[PathLike]]) -> list[Path]:
    """The Parquet files of ``source`` (a ratings folder, one file, or a list of files), sorted by name."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.name.endswith(".parquet") and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"ratings '{path}' does not exist: run the scoring recipe (recipes/score.py) first or fix the path")
    if not files:
        raise DataError(f"ratings '{source}' holds no *.parquet files: scoring has not finished (or wrote elsewhere)")
    return sorted(files)


_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place."""
    h ^= h >> np.uint64(30)
    h *= _K2
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _hash_fixed(buf: np.ndarray, start: int, n: int, width: int) -> np.ndarray:
    """64-bit hashes of ``n`` consecutive keys of ``width`` bytes each, starting at ``buf[start]``.

    Reads each key as 8-byte words through strided (possibly unaligned) views, no copy; a
    partial last word is read as the key's last 8 bytes (overlapping), or zero-padded if width < 8.
    """
    h = np.full(n, (width * int(_K1) + 1) % 2**64, dtype=np.uint64)
    if n == 0 or width == 0:
        return _mix(h)
    if width < 8:
        rows = np.zeros((n, 8), dtype=np.uint8)
        rows[:, :width] = buf[start : start + n * width].reshape(n, width)
        h ^= rows.view("<u8")[:, 0]
        return _mix(h)
    starts = list(range(0, width - 7, 8))
    if width % 8:
        starts.append(width - 8)
    for j, off in enumerate(starts):
        word = np.ndarray((n,), dtype="<u8", buffer=buf, offset=start + off, strides=(width,))
        h ^= word
        h *= _K1 if j % 2 == 0 else _K2
        h ^= h >> np.uint64(29)
    return _mix(h)


_M64 = 2**64 - 1
_FP_CHUNK = 1 << 18


def _mix_one(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _M64
    return h ^ (h >> 31)


def key_hash(key: str) -> int:
    """The hash :func:`key_hashes` gives ``key``, for one key (streams look keys up one at a time)."""
    data = key.encode()
    width = len(data)
    h = (width * int(_K1) + 1) & _M64
    if width == 0:
        return _mix_one(h)
    if width < 8:
        return _mix_one(h ^ int.from_bytes(data, "little"))
    starts = list(range(0, width - 7, 8))
    if width % 8:
        starts.append(width - 8)
    for j, off in enumerate(starts):
        h ^= int.from_bytes(data[off : off + 8], "little")
        h = (h * (int(_K1) if j % 2 == 0 else int(_K2))) & _M64
        h ^= h >> 29
    return _mix_one(h)


def key_hashes(keys: pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash per key, vectorised (no per-string Python work).

    Runs of keys of equal length are hashed straight from the Arrow data buffer; mixed lengths
    are grouped by length first.
    """
    out = np.empty(len(keys), dtype=np.uint64)
    pos = 0
    for chunk in keys.chunks:
        n = len(chunk)
        if n == 0:
            continue
        _, offsets_buf, data_buf = chunk.buffers()[:3]
        off_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=off_type)[chunk.offset : chunk.offset + n + 1].astype(np.int64)
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        lengths = np.diff(offsets)
        first = int(lengths[0])
        if (lengths == first).all():
            out[pos : pos + n] = _hash_fixed(data, int(offsets[0]), n, first)
        else:
            for length in np.unique(lengths).tolist():
                rows = np.flatnonzero(lengths == length)
                for s in range(0, len(rows), 1 << 20):  # bounded index matrices
                    part = rows[s : s + (1 << 20)]
                    idx = offsets[part][:, None] + np.arange(length, dtype=np.int64)
                    packed = data[idx].reshape(-1)
                    out[pos + part] = _hash_fixed(packed, 0, len(part), length)
        pos += n
    return out


def duplicate_keys(keys: pa.ChunkedArray, hashes: Optional[np.ndarray] = None) -> tuple[int, int, Optional[str], int]:
    """``(duplicate rows, keys rated twice or more, example key, its count)``; zeros when all distinct.

    Sort 64-bit hashes (fast), then confirm hash collisions exactly on the few candidate keys.
    """
    h = key_hashes(keys) if hashes is None else hashes
    hs = np.sort(h)
    dup_hash = hs[1:][hs[1:] == hs[:-1]]
    if len(dup_hash) == 0:
        return 0, 0, None, 0
    candidates = keys.filter(pa.array(np.isin(h, dup_hash)))
    counts = pc.value_counts(candidates)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dup) == 0:  # only hash collisions
        return 0, 0, None, 0
    total = int(pc.sum(dup.field("counts")).as_py()) - len(dup)
    return total, len(dup), dup[0]["values"].as_py(), int(dup[0]["counts"].as_py())


def content_fingerprint(hashes: np.ndarray, values: np.ndarray, tag: str) -> str:
    """A 16-hex-digit hash of the multiset of ``(key hash, value)`` pairs: row order does not matter.

    Each row is mixed to 64 bits; the rows' sum and xor (two independent lanes) and the count
    are then hashed. Vectorised: a few passes over the rows.
    """
    bits = np.ascontiguousarray(values, dtype="<f8").view(np.uint64)
    total, folded = 0, 0
    buf = np.empty(min(_FP_CHUNK, len(bits)), dtype=np.uint64)
    for s in range(0, len(bits), _FP_CHUNK):  # chunks that stay in cache: no 30M-row temporaries
        mixed = np.multiply(bits[s : s + _FP_CHUNK], _K2, out=buf[: min(_FP_CHUNK, len(bits) - s)])
        mixed ^= hashes[s : s + _FP_CHUNK]  # the key hashes are already well mixed: one more multiply suffices
        mixed *= _K1
        total = (total + int(mixed.sum(dtype=np.uint64))) & _M64
        folded ^= int(np.bitwise_xor.reduce(mixed))
    final = hashlib.blake2b(tag.encode(), digest_size=8)
    final.update(np.array([len(hashes), total, folded], dtype="<u8").tobytes())
    return final.hexdigest()


def _as_chunked_strings(keys: Union[pa.Array, pa.ChunkedArray, Iterable[str], np.ndarray]) -> pa.ChunkedArray:
    if isinstance(keys, pa.ChunkedArray):
        out = keys
    elif isinstance(keys, pa.Array):
        out = pa.chunked_array([keys])
    else:
        out = pa.chunked_array([pa.array(list(keys) if not isinstance(keys, np.ndarray) else keys, type=pa.string())])
    if not (pa.types.is_string(out.type) or pa.types.is_large_string(out.type)):
        out = out.cast(pa.string())
    return out


#: Share of a pool that may lack ratings without a shard missing altogether: images that could not
#: be decoded are skipped by the scorer, so a complete scoring run rates slightly fewer samples.
UNRATED_TOLERANCE = 0.01
_NAMED = 3  # shards named in one-line messages


@dataclass
class Coverage:
    """How much of a pool a ratings table covers, per shard."""

    pool: int  # pool samples
    rated: int  # pool samples with a rating
    shards: int  # pool shards
    unrated_shards: list[str]  # shards none of whose samples is rated (shard order)
    partial_shards: list[tuple[str, int, int]]  # (shard, rated, samples) for the others lacking some

    @property
    def share(self) -> float:
        return self.rated / self.pool if self.pool else 1.0

    @property
    def complete(self) -> bool:
        """No shard is unrated and at most :data:`UNRATED_TOLERANCE` of the pool is (undecodable samples)."""
        return not self.unrated_shards and self.pool - self.rated <= UNRATED_TOLERANCE * self.pool

    def describe(self) -> str:
        parts = []
        if self.unrated_shards:
            names = ", ".join(self.unrated_shards[:_NAMED])
            more = f" and {len(self.unrated_shards) - _NAMED} more" if len(self.unrated_shards) > _NAMED else ""
            parts.append(f"{len(self.unrated_shards)} of {self.shards} shards have no rating ({names}{more})")
        if self.partial_shards:
            worst = sorted(self.partial_shards, key=lambda t: t[1] / max(t[2], 1))[:_NAMED]
            names = ", ".join(f"{stem} {r}/{n}" for stem, r, n in worst)
            parts.append(f"{len(self.partial_shards)} shards are partly rated (e.g. {names})")
        return f"{self.rated} of {self.pool} pool samples ({self.share:.1%}) are rated" + (": " + "; ".join(parts) if parts else "")


def check_ratings_cover(
    ratings: "Ratings",
    pool: Mapping[str, Sequence[str]],
    allow_partial_ratings: bool = False,
    keep: Optional[float] = None,
    scored_into: Optional[PathLike] = None,
) -> Coverage:
    """Check that ``ratings`` rate every shard of ``pool`` (shard stem -> its sample keys).

    Selecting from ratings that miss shards (a scoring run that was killed, ``ratings=`` pointing
    at some of the files) silently shrinks the training set: ``keep`` of the rated part is a
    smaller share of the pool. That is an error unless ``allow_partial_ratings``; then a warning
    gives the effective keep (``keep`` × rated share).

    Args:
        ratings: the ratings table.
        pool: the pool's keys by shard (``ShardDataset.keys_by_shard()``).
        allow_partial_ratings: warn instead of failing (select from the rated part on purpose).
        keep: the fraction to keep, for the effective keep in the warning.
        scored_into: the scorer's ``out`` folder, for the resume hint (default: from ``ratings.source``).

    Raises:
        DataError: one line naming the unrated shards (a few, then a count) and how to finish scoring.
    """
    stems = list(pool)
    counts = np.array([len(pool[s]) for s in stems], dtype=np.int64)
    parts = [_as_chunked_strings(pool[s]).combine_chunks() for s in stems]
    flat = pa.chunked_array(parts or [pa.array([], pa.string())], pa.string())
    value_set = ratings.keys.combine_chunks() if ratings.keys.num_chunks != 1 else ratings.keys.chunk(0)
    found = pc.is_in(flat, value_set=value_set).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
    rated = np.add.reduceat(found, starts) if len(found) else np.zeros(len(counts), np.int64)
    rated = np.where(counts > 0, rated, 0)  # reduceat repeats a value for empty groups
    cov = Coverage(
        pool=int(counts.sum()),
        rated=int(rated.sum()),
        shards=len(stems),
        unrated_shards=[s for s, r, n in zip(stems, rated, counts) if n > 0 and r == 0],
        partial_shards=[(s, int(r), int(n)) for s, r, n in zip(stems, rated, counts) if 0 < r < n],
    )
    if cov.complete:
        return cov
    if allow_partial_ratings:
        effective = f"; effective keep {keep * cov.share:.3f} of the pool instead of {keep}" if keep is not None else ""
        warnings.warn(f"ratings from {ratings.source}: {cov.describe()}; allow_partial_ratings: selecting from the rated "
                      f"part only{effective}", stacklevel=2)
        return cov
    out = scored_into
    if out is None:  # the scorer writes OUT/ratings/<shard>.parquet
        src = Path(ratings.source)
        out = (src.parent if src.name == "ratings" else src) if src.is_dir() else "DIR"
    raise DataError(
        f"ratings from {ratings.source}: {cov.describe()}; finish scoring with `python recipes/score.py "
        f"rater=RATER.ckpt data=... out={out}` (it resumes: rated shards are skipped), "
        "or pass allow_partial_ratings=true to select from the rated part only"
    )


class Ratings:
    """All ratings of a dataset: ``keys`` (pyarrow strings) and ``ratings`` (float64), row-aligned.

    Build with :meth:`read` (the scorer's Parquet shards) or :meth:`from_arrays`.
    """

    def __init__(
        self,
        keys: pa.ChunkedArray,
        ratings: np.ndarray,
        scoring_fingerprints: Sequence[str] = (),
        source: str = "<memory>",
        ranking: Optional[dict] = None,
        scoring_threads: Sequence[int] = (),
    ) -> None:
        if len(keys) != len(ratings):
            raise DataError(f"ratings from {source}: {len(keys)} keys but {len(ratings)} ratings")
        self.keys = keys
        self.ratings = np.asarray(ratings, dtype=np.float64)
        self.scoring_fingerprints = sorted(set(scoring_fingerprints))
        #: torch thread counts the scorer ran with (from the files' metadata; empty when unknown)
        self.scoring_threads = sorted(set(int(t) for t in scoring_threads))
        self.source = source
        # The objective's declared ranking ends ({"objective", "head": easy|clean, "tail"}), if the scorer wrote them.
        self.ranking = dict(ranking) if ranking else None
        self._fingerprint: Optional[str] = None
        self._hashes: Optional[np.ndarray] = None

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, keys: Union[Sequence[str], np.ndarray, pa.Array, pa.ChunkedArray], ratings: Sequence[float] | np.ndarray,
        check: bool = True,
    ) -> "Ratings":
        """Ratings from in-memory arrays (tests, users with their own scores)."""
        out = cls(_as_chunked_strings(keys), np.asarray(ratings, dtype=np.float64))
        if check:
            out._check()
        return out

    @classmethod
    def read(
        cls,
        source: Union[PathLike, Sequence[PathLike]],
        expected_keys: Optional[Union[Sequence[str], pa.Array, pa.ChunkedArray]] = None,
        check_duplicates: bool = True,
        pool: Optional[Mapping[str, Sequence[str]]] = None,
        allow_partial_ratings: bool = False,
        keep: Optional[float] = None,
    ) -> "Ratings":
        """Read every ``*.parquet`` file of a ratings folder (or the given files) into one table.

        Args:
            source: the ``ratings/`` folder, one Parquet file, or a list of files.
            expected_keys: if given, every one of these keys must be rated.
            check_duplicates: refuse a key rated twice (costs a hash pass over the keys).
            pool: the pool's keys by shard stem: every shard must be rated (:func:`check_ratings_cover`).
            allow_partial_ratings, keep: passed to :func:`check_ratings_cover`.

        Raises:
            DataError: missing files or columns, NaN ratings, duplicate keys, missing expected keys.
        """
        files = find_rating_files(source)
        fingerprints = []
        rankings: set[bytes] = set()
        fingerprints, threads = [], []
        for path in files:  # footers only: columns and the scorer's fingerprint
            try:
                schema = pq.read_schema(path)
            except Exception as err:  # corrupt or truncated file
                raise DataError(
                    f"ratings file '{path}' cannot be read ({type(err).__name__}: {err}): delete it and re-score that shard"
                ) from None
            missing = {"key", "rating"} - set(schema.names)
            if missing:
                raise DataError(
                    f"ratings file '{path}' lacks column(s) {sorted(missing)}: expected 'key' and 'rating' (has {schema.names})"
                )
            meta = schema.metadata or {}
            if FINGERPRINT_KEY in meta:
                fingerprints.append(meta[FINGERPRINT_KEY].decode())
            if RANKING_KEY in meta:
                rankings.add(meta[RANKING_KEY])
            if meta.get(THREADS_KEY, b"").isdigit():
                threads.append(int(meta[THREADS_KEY]))
        try:
            # One multi-file read: files are decoded in parallel and concatenated in the given order.
            table = pq.read_table([str(p) for p in files], columns=["key", "rating"], use_threads=True)
        except Exception as err:
            raise DataError(f"ratings in {source} cannot be read ({type(err).__name__}: {err}): re-score the broken shard") from None
        key_col = table.column("key")
        if key_col.type != pa.string():
            key_col = key_col.cast(pa.string())
        key_chunks = key_col.chunks
        rating_parts = [table.column("rating").to_numpy().astype(np.float64, copy=False)]
        keys = pa.chunked_array(key_chunks, type=pa.string())
        ratings = np.concatenate(rating_parts) if rating_parts else np.zeros(0)
        where = str(source) if isinstance(source, (str, os.PathLike)) else f"{len(files)} files"
        # Files of different objectives mixed: no single declaration holds, so none is passed on.
        ranking = json.loads(next(iter(rankings))) if len(rankings) == 1 else None
        out = cls(keys, ratings, fingerprints, source=where, ranking=ranking, scoring_threads=threads)
        out._check(check_duplicates)
        if expected_keys is not None:
            out.check_covers(expected_keys)
        if pool is not None:
            check_ratings_cover(out, pool, allow_partial_ratings=allow_partial_ratings, keep=keep)
        return out

    def write(self, directory: PathLike, stem: str = "ratings", fingerprint: Optional[str] = None) -> Path:
        """Write the table as ``directory/<stem>.parquet`` atomically (temp file + rename); returns the path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        table = pa.table({"key": self.keys, "rating": pa.array(self.ratings, type=pa.float64())})
        if fingerprint is not None:
            table = table.replace_schema_metadata({FINGERPRINT_KEY: fingerprint.encode()})
        final = directory / f"{stem}.parquet"
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".parquet.tmp")
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        return final

    # -- checks -------------------------------------------------------------------------------------------------
    def _check(self, duplicates: bool = True) -> None:
        if len(self) == 0:
            raise DataError(f"ratings from {self.source} are empty: nothing was scored")
        if self.keys.null_count:
            raise DataError(f"ratings from {self.source}: {self.keys.null_count} rows have no key; re-score those shards")
        nan = int(np.isnan(self.ratings).sum())
        if nan:
            raise DataError(f"ratings from {self.source}: {nan} of {len(self)} ratings are NaN or missing; re-score those shards")
        if duplicates:
            extra, num_keys, example, count = duplicate_keys(self.keys, self.key_hashes)
            if extra:
                raise DataError(
                    f"ratings from {self.source}: {extra} duplicate rows over {num_keys} keys "
                    f"(e.g. '{example}' appears {count} times); each key must be rated once: "
                    "remove overlapping shard files"
                )

    def check_covers(self, expected_keys: Union[Sequence[str], pa.Array, pa.ChunkedArray]) -> None:
        """Raise :class:`DataError` if some of ``expected_keys`` have no rating."""
        expected = _as_chunked_strings(expected_keys)
        found = pc.is_in(expected, value_set=self.keys.combine_chunks() if self.keys.num_chunks != 1 else self.keys.chunk(0))
        missing = len(expected) - pc.sum(found).as_py() if len(expected) else 0
        if missing:
            example = expected.filter(pc.invert(found))[0].as_py()
            raise DataError(
                f"ratings from {self.source}: {missing} of {len(expected)} expected keys are not rated "
                f"(e.g. '{example}'); score the missing shards or pass the matching ratings folder"
            )

    # -- access -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ratings)

    def __repr__(self) -> str:
        return f"Ratings(n={len(self)}, source={self.source!r})"

    @property
    def key_hashes(self) -> np.ndarray:
        """64-bit hash per key (cached; shared by the duplicate check and the fingerprint)."""
        if self._hashes is None:
            self._hashes = key_hashes(self.keys)
        return self._hashes

    @property
    def fingerprint(self) -> str:
        """Stable hash of the (key, rating) pairs, independent of row and file order."""
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self.key_hashes, self.ratings, "ratings")
        return self._fingerprint
