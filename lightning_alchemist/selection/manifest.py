"""The selection manifest: which keys to train on, with what weight, and how they were chosen.

On disk: Parquet with columns ``key`` (string) and ``weight`` (float64), plus ``bin`` (int16) for
schedules such as the curriculum, and the provenance as JSON under the schema metadata key
``lightning_alchemist.selection``. Any Parquet reader can consume it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.errors import DataError
from lightning_alchemist.paths import write_atomic
from lightning_alchemist.selection.schedule import schedule_weights
from lightning_alchemist.selection.ratings import _as_chunked_strings, content_fingerprint, key_hashes

__all__ = ["META_KEY", "Selection"]

META_KEY = b"lightning_alchemist.selection"
FORMAT_VERSION = 1


@dataclass
class Selection:
    """Selected keys and their weights (1.0 for a plain subset), plus provenance ``meta``.

    ``meta`` holds ``strategy``, ``params``, ``keep``, ``seed``, ``num_rated``, ``num_kept`` and
    ``ratings_fingerprint`` when made by a strategy. ``bins`` and ``meta["schedule"]`` are set by
    schedules whose weights change per epoch (see :meth:`epoch_weights`).
    """

    keys: pa.ChunkedArray
    weights: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    bins: Optional[np.ndarray] = None
    # Row positions of the keys in the ratings they were selected from (in memory only).
    indices: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.keys = _as_chunked_strings(self.keys)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if len(self.weights) != len(self.keys):
            raise DataError(f"selection: {len(self.keys)} keys but {len(self.weights)} weights")
        if len(self.weights) and (not np.isfinite(self.weights).all() or (self.weights < 0).any()):
            raise DataError("selection: weights must be finite and non-negative")
        if self.bins is not None:
            self.bins = np.asarray(self.bins, dtype=np.int16)
        self._fingerprint: Optional[str] = None

    @classmethod
    def from_keys(cls, keys: Union[Sequence[str], pa.Array, pa.ChunkedArray], weights: Optional[Sequence[float]] = None,
                  **meta: Any) -> "Selection":
        """A selection from a list of keys (weights default to 1)."""
        keys = _as_chunked_strings(keys)
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=np.float64)
        meta.setdefault("strategy", "manual")
        meta.setdefault("num_kept", len(keys))
        return cls(keys, w, meta)

    def __len__(self) -> int:
        return len(self.weights)

    def __repr__(self) -> str:
        return f"Selection(n={len(self)}, strategy={self.meta.get('strategy')!r}, keep={self.meta.get('keep')})"

    @property
    def fingerprint(self) -> str:
        """Stable hash of the keys, weights and bins."""
        if self._fingerprint is None:
            hashes = key_hashes(self.keys)
            fp = content_fingerprint(hashes, self.weights, "selection")
            if self.bins is not None:
                fp = content_fingerprint(hashes, self.bins.astype(np.float64), fp)
            self._fingerprint = fp
        return self._fingerprint

    @property
    def schedule(self) -> Optional[dict[str, Any]]:
        """The per-epoch weight schedule (``{"name": "curriculum", ...}``) or ``None`` for static weights."""
        return self.meta.get("schedule")

    @property
    def keep(self) -> Optional[float]:
        return self.meta.get("keep")

    def epoch_weights(self, epoch: int, epochs: Optional[int] = None) -> np.ndarray:
        """The sampling weight of every row for ``epoch`` (the static ``weights`` without a schedule).

        ``epochs``: the schedule's length when the manifest leaves it open (``null``), e.g. the
        trainer's ``max_epochs``.
        """
        sched = self.schedule
        if not sched:
            return self.weights
        return schedule_weights(sched, self.weights, self.bins, epoch, epochs)

    def samples_per_epoch(self) -> Optional[int]:
        """Draws per epoch the selection asks for (schedules, soft selections); ``None``: every selected row."""
        sched = self.schedule
        if sched:
            return int(sched["num_samples"])
        return int(self.meta["num_samples"]) if self.meta.get("num_samples") is not None else None

    # -- I/O ------------------------------------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        cols = {"key": self.keys, "weight": pa.array(self.weights, type=pa.float64())}
        if self.bins is not None:
            cols["bin"] = pa.array(self.bins, type=pa.int16())
        meta = dict(self.meta, format_version=FORMAT_VERSION, fingerprint=self.fingerprint)
        return pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})

    def write(self, path: Union[str, os.PathLike]) -> Path:
        """Write the manifest atomically (temp file + rename); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".parquet.tmp")
        os.close(fd)
        table = self.to_table()
        return write_atomic(path, lambda t: pq.write_table(table, t), tmp=Path(tmp))

    @classmethod
    def read(cls, path: Union[str, os.PathLike]) -> "Selection":
        """Read a manifest written by :meth:`write` (or any Parquet file with ``key`` and optional ``weight``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "selection.parquet"
        if not path.is_file():
            raise DataError(f"selection '{path}' does not exist: run recipes/select_data.py first or fix the path")
        try:
            table = pq.read_table(path)
        except Exception as err:
            raise DataError(f"selection '{path}' cannot be read ({type(err).__name__}: {err}): re-run recipes/select_data.py") from None
        if "key" not in table.column_names:
            raise DataError(f"selection '{path}' has no 'key' column (has {table.column_names})")
        raw = (table.schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else {"strategy": "external"}
        meta.pop("format_version", None)
        meta.pop("fingerprint", None)
        weights = table.column("weight").to_numpy() if "weight" in table.column_names else np.ones(table.num_rows)
        bins = table.column("bin").to_numpy() if "bin" in table.column_names else None
        keys = table.column("key")
        if keys.type != pa.string():
            keys = keys.cast(pa.string())
        return cls(keys, weights, meta, bins)
