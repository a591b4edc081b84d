"""``data=folder``: a folder of images, each with a caption beside it (``name.txt``) or listed in a CSV/JSONL.

- Beside: ``a/b.jpg`` + ``a/b.txt`` (and optionally ``a/b.json``, whose fields go to the sample's
  ``.json``). An image without a ``.txt`` (or with an empty one) is skipped as ``no_caption``.
- Listed: ``data.folder.captions=captions.csv`` (or ``.jsonl``) with ``path`` and ``caption`` columns
  (names configurable); paths relative to ``data.root``; every other column goes to the ``.json``
  (e.g. an aesthetic score, usable by a heuristic baseline). A row naming an absent file is skipped as
  ``missing_image``; an image no row names, as ``no_caption``.

The key is the image's path relative to the root without its extension, dots replaced by ``_``
(webdataset splits a key from its extension at the first dot), e.g. ``cats/tabby_01``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.config import DataConfig
from lightning_alchemist.data.layouts.convert import Job, Prepared, Record, Skips, chunks, convert, file_stat, fingerprint
from lightning_alchemist.data.layouts.hpdv3 import ListRecords
from lightning_alchemist.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _root(cfg: DataConfig) -> Path:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; pass a folder of images with captions (README: data=folder)")
    return root


def _walk(root: Path) -> list[tuple[str, int, int]]:
    """Every file under ``root`` as (relative path, size, mtime_ns), sorted; hidden entries are skipped."""
    out = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    st = entry.stat()
                    out.append((str(Path(entry.path).relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def sample_key(rel: str) -> str:
    """The webdataset key of the image at relative path ``rel``: no extension, no dots in the name."""
    path = Path(rel)
    stem = str(path.with_suffix("")) if path.suffix else str(path)
    parent, _, name = stem.rpartition("/")
    name = name.replace(".", "_")
    return f"{parent.replace('.', '_')}/{name}" if parent else name


def _captions_path(cfg: DataConfig, root: Path) -> Optional[Path]:
    if not cfg.folder.captions:
        return None
    path = Path(cfg.folder.captions).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DataError(f"data.folder.captions: {path} does not exist; give a .csv or .jsonl of path,caption (or null for name.txt files)")
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise DataError(f"data.folder.captions: {path} is neither .csv nor .jsonl")
    return path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise DataError(f"data.folder.captions: line {n} of {path} is not JSON ({err})") from None
    return rows


def _number_or_text(value: Any) -> Any:
    """CSV cells are strings: numbers become numbers, so a score column can rank samples."""
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def identity(cfg: DataConfig) -> dict[str, Any]:
    root = _root(cfg)
    listing = hashlib.sha1(json.dumps(_walk(root)).encode()).hexdigest()
    captions = _captions_path(cfg, root)
    return {"layout": "folder", "root": str(root.resolve()), "listing": listing,
            "captions": file_stat(captions) if captions else None,
            "columns": [cfg.folder.path_column, cfg.folder.caption_column]}


def _beside_records(root: Path, files: list[str], skips: Skips) -> list[Record]:
    present = set(files)
    records = []
    for rel in files:
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        base = str(Path(rel).with_suffix(""))
        caption = None
        if f"{base}.txt" in present:
            caption = (root / f"{base}.txt").read_text(encoding="utf-8", errors="replace")
        meta: dict[str, Any] = {"path": rel}
        if f"{base}.json" in present:
            try:
                extra = json.loads((root / f"{base}.json").read_text(encoding="utf-8"))
                if isinstance(extra, dict):
                    meta.update(extra)
            except ValueError as err:
                skips.add("bad_json", sample_key(rel), f"{base}.json ignored ({err})")  # counted; the sample stays
        records.append(Record(key=sample_key(rel), caption=caption, meta=meta, path=str(root / rel)))
    return records


def _listed_records(cfg: DataConfig, root: Path, files: list[str], captions: Path, skips: Skips) -> list[Record]:
    pcol, ccol = cfg.folder.path_column, cfg.folder.caption_column
    rows = _read_rows(captions)
    if rows and (pcol not in rows[0] or ccol not in rows[0]):
        raise DataError(f"data.folder.captions: {captions} needs columns '{pcol}' and '{ccol}' (has {sorted(rows[0])}); "
                        "set data.folder.path_column / caption_column")
    records, listed = [], set()
    for n, row in enumerate(rows):
        rel = str(row.get(pcol) or "").strip()
        if not rel:
            skips.add("no_path", f"{captions.name}[{n}]")
            continue
        path = Path(rel)
        rel = str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) else rel
        listed.add(rel)
        meta = {k: _number_or_text(v) for k, v in row.items() if k not in (pcol, ccol)}
        meta["path"] = rel
        full = path if path.is_absolute() else root / rel
        records.append(Record(key=sample_key(rel), caption=row.get(ccol), meta=meta, path=str(full)))
    for rel in files:
        if Path(rel).suffix.lower() in IMAGE_SUFFIXES and rel not in listed:
            skips.add("no_caption", sample_key(rel), f"{rel} is not listed in {captions.name}")
    return records


def prepare(cfg: DataConfig) -> Prepared:
    """Convert the folder once into webdataset shards (cached by its listing) and return them."""
    ident = identity(cfg)
    root = _root(cfg)
    size = cfg.convert.shard_size

    def plan(skips: Skips) -> list[Job]:
        files = [rel for rel, _, _ in _walk(root)]
        captions = _captions_path(cfg, root)
        if captions is not None:
            files = [f for f in files if root / f != captions]
            records = _listed_records(cfg, root, files, captions, skips)
        else:
            records = _beside_records(root, files, skips)
        if not records:
            raise DataError(f"data.root: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        keys: set[str] = set()
        unique = []
        for rec in records:  # a.jpg and a.png (or a.b.jpg and a_b.jpg) would share a key: the first wins
            if rec.key in keys:
                skips.add("duplicate_key", rec.key, str(rec.path))
                continue
            keys.add(rec.key)
            unique.append(rec)
        records = unique
        return [Job("pool", i, ListRecords(part)) for i, part in enumerate(chunks(records, size))]

    return convert("folder", fingerprint({**ident, "shard_size": size}), cfg.cache_dir, plan, size, cfg.convert.workers,
                   info={"root": str(root)})


__all__ = ["identity", "prepare", "sample_key"]
