"""``data=flux_reason``: FLUX-Reason-6M parquet files (``<Subset>/fluxdb-<subset>-NNNNN-of-MMMMM.parquet``).

Columns: ``id`` (the key), ``image`` = struct{``bytes``, ``path``}, ``caption_*`` (and ``_cn``),
``bool_caption_*``, ``score_*``. Files are streamed by record batches with pyarrow (never read whole);
the caption is ``data.flux_reason.caption`` when present, else ``fallback_caption``; every ``score_*``
and ``bool_caption_*`` column, the subset (folder) and which caption column was used go to the
sample's ``.json``, so a score can serve as a heuristic baseline. One conversion job per file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow.parquet as pq

from lightning_alchemist.config import DataConfig
from lightning_alchemist.data.layouts.convert import Job, Prepared, Record, Skips, convert, file_stat, fingerprint
from lightning_alchemist.errors import DataError

log = logging.getLogger(__name__)


def parquet_files(cfg: DataConfig) -> list[Path]:
    """The dataset's parquet files under ``data.root`` (only the listed subsets' folders when given), sorted."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; pass the FLUX-Reason-6M download (its subset folders of .parquet files)")
    if cfg.flux_reason.subsets:
        files = []
        for subset in cfg.flux_reason.subsets:
            folder = root / subset
            if not folder.is_dir():
                raise DataError(f"data.flux_reason.subsets: no folder {folder}; subsets are the dataset's folders, "
                                f"e.g. Aesthetics-Part01, Imaginative, Text")
            files.extend(sorted(folder.rglob("*.parquet")))
    else:
        files = sorted(root.rglob("*.parquet"))
    if not files:
        raise DataError(f"data.root: no .parquet files under {root}; FLUX-Reason-6M ships <Subset>/fluxdb-*.parquet")
    return files


class ParquetRecords:
    """The records of one parquet file, read batch by batch (picklable: a path and column names)."""

    def __init__(self, path: str, subset: str, caption: str, fallback: Optional[str], batch_rows: int,
                 skip_rows: frozenset) -> None:
        self.path, self.subset, self.caption, self.fallback = path, subset, caption, fallback
        self.batch_rows, self.skip_rows = batch_rows, skip_rows

    def __call__(self, skips: Skips) -> Iterable[Record]:
        pf = pq.ParquetFile(self.path)
        names = pf.schema_arrow.names
        if "id" not in names or "image" not in names:
            skips.add("bad_file", self.path, f"no 'id'/'image' column (has {names[:8]}...)")
            return
        meta_cols = [c for c in names if c.startswith("score_") or c.startswith("bool_caption_")]
        caption_cols = [c for c in (self.caption, self.fallback) if c and c in names]
        if not caption_cols:
            skips.add("bad_file", self.path, f"no caption column {self.caption!r} or {self.fallback!r}")
            return
        columns = ["id", "image", *caption_cols, *[c for c in meta_cols if c not in caption_cols]]
        row = 0
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=columns):
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                pos, row = row, row + 1
                key = data["id"][i]
                if key is None or str(key) == "":
                    skips.add("no_key", f"{Path(self.path).name}[{pos}]")
                    continue
                key = str(key)
                if pos in self.skip_rows:
                    skips.add("duplicate_key", key, f"{self.path} row {pos} repeats an id seen earlier")
                    continue
                image = data["image"][i]
                raw = image.get("bytes") if isinstance(image, dict) else image
                caption, used = None, None
                for col in caption_cols:
                    value = data[col][i]
                    if isinstance(value, str) and value.strip():
                        caption, used = value, col
                        break
                meta: dict[str, Any] = {c: data[c][i] for c in meta_cols}
                meta.update(subset=self.subset, caption_column=used, file=Path(self.path).name)
                yield Record(key=key, caption=caption, meta=meta, image=raw)


def _duplicate_rows(files: list[Path]) -> dict[str, frozenset]:
    """Per file, the rows whose ``id`` already appeared earlier (file order, then row order): only ids are read."""
    seen: set[str] = set()
    out: dict[str, frozenset] = {}
    for path in files:
        try:
            ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        except Exception:  # a broken file or one without ids: its job counts it
            continue
        dup = []
        for row, key in enumerate(ids):
            if key is None:
                continue
            if key in seen:
                dup.append(row)
            else:
                seen.add(key)
        out[str(path)] = frozenset(dup)
    return out


def identity(cfg: DataConfig) -> dict[str, Any]:
    fr = cfg.flux_reason
    return {"layout": "flux_reason", "files": [file_stat(p) for p in parquet_files(cfg)],
            "caption": fr.caption, "fallback_caption": fr.fallback_caption}


def prepare(cfg: DataConfig) -> Prepared:
    """Convert the parquet files under ``cfg.root`` once into webdataset shards (cached) and return them."""
    ident = identity(cfg)
    root = Path(cfg.root).expanduser()
    files = parquet_files(cfg)
    fr = cfg.flux_reason
    size = cfg.convert.shard_size

    def plan(skips: Skips) -> list[Job]:
        dups = _duplicate_rows(files)
        jobs = []
        for i, path in enumerate(files):
            rel = path.relative_to(root)
            subset = rel.parts[0] if len(rel.parts) > 1 else ""
            jobs.append(Job("pool", i, ParquetRecords(str(path), subset, fr.caption, fr.fallback_caption, fr.batch_rows,
                                                      dups.get(str(path), frozenset()))))
        return jobs

    return convert("flux_reason", fingerprint({**ident, "shard_size": size}), cfg.cache_dir, plan, size, cfg.convert.workers,
                   info={"root": str(root), "files": len(files)})


__all__ = ["ParquetRecords", "identity", "parquet_files", "prepare"]
