"""``RatingWriter``: one Parquet file of ratings per input shard, written atomically.

Contract (read by :mod:`lightning_alchemist.selection.ratings`): ``DIR/<shard-stem>.parquet``
with columns ``key`` (string) and ``rating`` (float32, the raw instance logit; higher = better /
easier), optional extras such as ``rating_batch``, and the scoring fingerprint in the schema
metadata under ``lightning_alchemist.fingerprint``. A file appears only complete (written as
``<stem>.parquet.tmp`` then ``os.replace``), so a killed run leaves finished shards intact and a
rerun skips them (:func:`finished_shards`) and never writes a key twice.

The predict loader must yield whole shards per rank in shard order (the datamodule's
``predict_dataloader`` does): a shard is complete when its expected count is reached, when a
later shard's rows arrive, or when prediction ends.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.paths import write_atomic
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_alchemist.errors import AlchemistError

__all__ = ["FINGERPRINT_KEY", "RatingWriter", "finished_shards", "shard_stem", "write_ratings_file"]

log = logging.getLogger(__name__)

FINGERPRINT_KEY = b"lightning_alchemist.fingerprint"
# torch's intra-op thread count while scoring: float reductions (hence ratings) can differ with it
THREADS_KEY = b"lightning_alchemist.torch_threads"


def shard_stem(path: str) -> str:
    """A shard's file name without ``.tar`` (names its ratings file)."""
    name = os.path.basename(str(path).rstrip("/"))
    return name[: -len(".tar")] if name.endswith(".tar") else name


def write_ratings_file(path: Path, columns: Mapping[str, Sequence[Any]], fingerprint: str,
                       metadata: Optional[Mapping[bytes, bytes]] = None) -> None:
    """Write one ratings table atomically: ``path.tmp`` then ``os.replace``; ``metadata`` joins the schema's."""
    arrays = {"key": pa.array(list(columns["key"]), type=pa.string())}
    for name, values in columns.items():
        if name != "key":
            arr = np.asarray(values, dtype=np.float32)
            # a vector per row (the pooled features of store_embedding): a fixed-size list column
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1]) if arr.ndim == 2 \
                else pa.array(arr)
    import torch

    meta = {FINGERPRINT_KEY: fingerprint.encode(), THREADS_KEY: str(torch.get_num_threads()).encode(), **dict(metadata or {})}
    table = pa.table(arrays).replace_schema_metadata(meta)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp), tmp=path.with_name(path.name + ".tmp"))


def finished_shards(ratings_dir: Path, fingerprint: str, overwrite: bool = False) -> set[str]:
    """Stems of the shards already scored under ``fingerprint`` in ``ratings_dir``.

    Raises:
        AlchemistError: a file was scored with another rater or config (unless ``overwrite``,
            which treats such files as unfinished so they get rescored and replaced).
    """
    done: set[str] = set()
    ratings_dir = Path(ratings_dir)
    if not ratings_dir.is_dir():
        return done
    for path in sorted(ratings_dir.glob("*.parquet")):
        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception:  # a foreign or broken file: rescoring replaces it
            log.warning("ratings file %s is unreadable; its shard will be rescored", path)
            continue
        found = meta.get(FINGERPRINT_KEY, b"").decode()
        if found == fingerprint:
            done.add(path.name[: -len(".parquet")])
        elif not overwrite:
            raise AlchemistError(
                f"ratings '{path}' was scored with another rater or config (fingerprint {found or 'none'} != {fingerprint}); "
                "score into a new out dir, or pass overwrite=true to rescore"
            )
    return done


class RatingWriter(BasePredictionWriter):
    """Buffers each shard's predictions and writes ``<stem>.parquet`` once the shard is complete.

    Args:
        ratings_dir: output folder (created).
        fingerprint: the scoring fingerprint stored in every file.
        expected: optional ``{stem: number of samples}``; a shard is written as soon as it is full.
        skip: stems already finished: their rows (if the loader yields them anyway) are dropped.
        metadata: extra schema metadata of every file (e.g. the objective's ranking ends).
    """

    def __init__(
        self,
        ratings_dir: str | os.PathLike,
        fingerprint: str,
        expected: Optional[Mapping[str, int]] = None,
        skip: Optional[set[str]] = None,
        metadata: Optional[Mapping[bytes, bytes]] = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.metadata = dict(metadata or {})
        self.dir = Path(ratings_dir)
        self.fingerprint = fingerprint
        self.expected = dict(expected or {})
        self.skip = set(skip or ())
        self._buffers: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
        self.written: list[str] = []
        self.rows_written = 0
        self.rows_skipped = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def _flush(self, stem: str) -> None:
        buf = self._buffers.pop(stem, None)
        if buf is None or not buf["key"]:
            return
        write_ratings_file(self.dir / f"{stem}.parquet", {k: v for k, v in buf.items() if k != "_seen"}, self.fingerprint, self.metadata)
        self.written.append(stem)
        self.rows_written += len(buf["key"])
        self.skip.add(stem)
        if stem in self.expected and len(buf["key"]) != self.expected[stem]:
            log.warning("shard %s: wrote %d ratings, expected %d (undecodable samples are skipped)", stem, len(buf["key"]), self.expected[stem])

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Optional[Sequence[int]],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        extras = [k for k in prediction if k not in ("key", "shard")]
        values = {k: np.asarray(prediction[k].detach().cpu() if hasattr(prediction[k], "detach") else prediction[k]) for k in extras}
        for i, (key, shard) in enumerate(zip(prediction["key"], prediction["shard"])):
            stem = shard_stem(shard)
            if stem in self.skip:
                self.rows_skipped += 1
                continue
            if stem not in self._buffers:
                # Shards arrive in order: a new shard means every earlier open one is complete.
                for done in list(self._buffers):
                    self._flush(done)
                self._buffers[stem] = {"key": [], "_seen": set(), **{k: [] for k in extras}}
            buf = self._buffers[stem]
            if key in buf["_seen"]:  # a key twice in one shard: keep the first
                self.rows_skipped += 1
                continue
            buf["_seen"].add(key)
            buf["key"].append(key)
            for k in extras:
                buf[k].append(values[k][i])
            if self.expected.get(stem) == len(buf["key"]):
                self._flush(stem)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The loader ended, so the open shard is complete, unless prediction was cut short
        # (limit_predict_batches): then only a shard known to be full may be written.
        limited = trainer is not None and getattr(trainer, "limit_predict_batches", 1.0) not in (1.0, None)
        for stem in list(self._buffers):
            if limited and self.expected.get(stem) != len(self._buffers[stem]["key"]):
                log.warning("shard %s: prediction was limited; its %d rows are not written", stem, len(self._buffers[stem]["key"]))
                self._buffers.pop(stem)
                continue
            self._flush(stem)
        super().on_predict_epoch_end(trainer, pl_module)
