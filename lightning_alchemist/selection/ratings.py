"""The ratings table: one rating per sample key, read from the ``ratings/`` Parquet shards.

Contract (written by the scorer): ``DIR/ratings/<shard-stem>.parquet`` with columns ``key``
(string) and ``rating`` (float, higher = rated better/easier), possibly extra columns, and the
scoring-config fingerprint under the schema metadata key ``lightning_alchemist.fingerprint``.
Files ending in ``.parquet.tmp`` are being written and are ignored.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_alchemist.errors import DataError

__all__ = ["FINGERPRINT_KEY", "Ratings", "content_fingerprint", "find_rating_files"]

FINGERPRINT_KEY = b"lightning_alchemist.fingerprint"
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


def _hash_strings(hasher: "hashlib._Hash", lengths: "hashlib._Hash", array: pa.ChunkedArray) -> None:
    """Feed string data and value lengths into two hashers, independent of how the array is chunked."""
    for chunk in array.chunks:
        if len(chunk) == 0:
            continue
        chunk = chunk.cast(pa.large_string()) if pa.types.is_string(chunk.type) else chunk
        _, offsets_buf, data_buf = chunk.buffers()[:3]
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
        lengths.update(np.diff(offsets).astype("<i8").tobytes())
        if data_buf is not None:
            hasher.update(memoryview(data_buf)[int(offsets[0]) : int(offsets[-1])])


def content_fingerprint(keys: pa.ChunkedArray, values: np.ndarray, tag: str) -> str:
    """A stable 16-hex-digit hash of ``keys`` (strings, in order) and ``values`` (as float64)."""
    data, lengths = hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16)
    _hash_strings(data, lengths, keys)
    final = hashlib.blake2b(tag.encode(), digest_size=8)
    final.update(data.digest())
    final.update(lengths.digest())
    final.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
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
    ) -> None:
        if len(keys) != len(ratings):
            raise DataError(f"ratings from {source}: {len(keys)} keys but {len(ratings)} ratings")
        self.keys = keys
        self.ratings = np.asarray(ratings, dtype=np.float64)
        self.scoring_fingerprints = sorted(set(scoring_fingerprints))
        self.source = source
        self._fingerprint: Optional[str] = None

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
    ) -> "Ratings":
        """Read every ``*.parquet`` file of a ratings folder (or the given files) into one table.

        Args:
            source: the ``ratings/`` folder, one Parquet file, or a list of files.
            expected_keys: if given, every one of these keys must be rated.
            check_duplicates: refuse a key rated twice (costs a hash pass over the keys).

        Raises:
            DataError: missing files or columns, NaN ratings, duplicate keys, missing expected keys.
        """
        files = find_rating_files(source)
        tables, fingerprints = [], []
        for path in files:
            try:
                schema = pq.read_schema(path)
                missing = {"key", "rating"} - set(schema.names)
                if missing:
                    raise DataError(
                        f"ratings file '{path}' lacks column(s) {sorted(missing)}: expected 'key' and 'rating' (has {schema.names})"
                    )
                table = pq.read_table(path, columns=["key", "rating"], use_threads=True)
            except DataError:
                raise
            except Exception as err:  # corrupt or truncated file
                raise DataError(f"ratings file '{path}' cannot be read ({type(err).__name__}: {err}): delete it and re-score that shard") from None
            meta = schema.metadata or {}
            if FINGERPRINT_KEY in meta:
                fingerprints.append(meta[FINGERPRINT_KEY].decode())
            tables.append(table)
        key_chunks, rating_parts = [], []
        for table in tables:
            key_col = table.column("key")
            if key_col.type != pa.string():
                key_col = key_col.cast(pa.string())
            key_chunks.extend(key_col.chunks)
            rating_parts.append(table.column("rating").to_numpy().astype(np.float64, copy=False))
        keys = pa.chunked_array(key_chunks, type=pa.string())
        ratings = np.concatenate(rating_parts) if rating_parts else np.zeros(0)
        where = str(source) if isinstance(source, (str, os.PathLike)) else f"{len(files)} files"
        out = cls(keys, ratings, fingerprints, source=where)
        out._check(check_duplicates)
        if expected_keys is not None:
            out.check_covers(expected_keys)
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
            distinct = pc.count_distinct(self.keys).as_py()
            if distinct != len(self):
                counts = pc.value_counts(self.keys)
                dup = counts.filter(pc.greater(counts.field("counts"), 1))
                example = dup[0]["values"].as_py()
                raise DataError(
                    f"ratings from {self.source}: {len(self) - distinct} duplicate rows over {len(dup)} keys "
                    f"(e.g. '{example}' appears {dup[0]['counts'].as_py()} times); each key must be rated once: "
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
    def fingerprint(self) -> str:
        """Stable hash of the keys and ratings in row order (files are read in name order)."""
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self.keys, self.ratings, "ratings")
        return self._fingerprint

    def take(self, indices: np.ndarray) -> pa.ChunkedArray:
        """The keys at ``indices``."""
        return self.keys.take(pa.array(np.asarray(indices, dtype=np.int64)))
