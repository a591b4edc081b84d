"""A key → (shard, member offsets) index of webdataset shards, built once and cached.

The index of ``shard.tar`` lives under the cache root (``$LIGHTNING_ALCHEMIST_CACHE/index/``), in a
file named by a hash of the shard's absolute path, size and mtime: nothing is ever written beside
the user's data (a read-only dataset works, and a glob over the data folder never picks up an
index as a shard); a rewritten shard gets a fresh index. It also stores each caption, so captions
are readable without opening tars.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_alchemist.data.decode import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, SkipStats
from lightning_alchemist.data.tarscan import sample_key, scan_tar
from lightning_alchemist.paths import cache_root

log = logging.getLogger(__name__)

INDEX_VERSION = "2"  # 2: in a truncated shard, the sample the break may have cut is left out


@dataclass
class ShardIndex:
    """Samples of one shard (only those with an image and a non-empty caption)."""

    shard: str
    keys: list[str]
    image_offset: np.ndarray  # int64 byte offsets of the image member's data
    image_size: np.ndarray  # int64
    image_ext: list[str]
    captions: list[str]
    json_offset: np.ndarray  # int64, -1 when absent
    json_size: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.keys)


def _signature(shard: str) -> str:
    st = os.stat(shard)
    return f"{INDEX_VERSION}:{st.st_size}:{int(st.st_mtime_ns)}"


def index_path(shard: str) -> Path:
    """Where the index of ``shard`` is cached: ``<cache>/index/<ab>/<hash>.index.parquet``.

    The hash covers the absolute path, size and mtime (and the index version), so a moved or
    rewritten shard is indexed afresh; two characters of fan-out keep folders small at 100k shards.
    """
    ident = f"{os.path.abspath(shard)}\0{_signature(shard)}"
    digest = hashlib.sha1(ident.encode()).hexdigest()[:24]
    return cache_root() / "index" / digest[:2] / f"{digest}.index.parquet"


def _scan(shard: str, stats: SkipStats) -> ShardIndex:
    scan = scan_tar(shard)
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    order: list[str] = []
    for member in scan.members:
        parsed = sample_key(member.name)
        if parsed is None:
            continue
        key, ext = parsed[0], parsed[1].lower()
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key][ext] = (member.offset_data, member.size)
    if scan.truncated:
        # the break may have cut the last sample (a member of it could be the missing one): leave it out,
        # as the key scan of a selected stream does, so both count the same samples
        if order and scan.last_sample_cut(order[-1]):
            groups.pop(order.pop())
        log.warning("shard %s is truncated or corrupt after %d samples (%s); indexing what was read", shard, len(order), scan.error)
        stats.record("corrupt_shard", shard, scan.error or "")
    captions: dict[str, str] = {}
    wanted = {key: next((e for e in CAPTION_EXTENSIONS if e in groups[key]), None) for key in order}
    if scan.compressed:  # offsets are not file positions: read the captions through tarfile
        with tarfile.open(shard, mode="r:*") as tar:
            for member in scan.members:
                parsed = sample_key(member.name)
                if parsed and parsed[0] in wanted and wanted[parsed[0]] == parsed[1].lower():
                    handle = tar.extractfile(member)
                    captions[parsed[0]] = handle.read().decode("utf-8", errors="replace").strip() if handle else ""
    else:
        with open(shard, "rb") as fh:
            for key, ext in wanted.items():
                if ext is not None:
                    offset, size = groups[key][ext]
                    fh.seek(offset)
                    captions[key] = fh.read(size).decode("utf-8", errors="replace").strip()
    keys, img_off, img_size, img_ext, caps, js_off, js_size = [], [], [], [], [], [], []
    for key in order:
        members = groups[key]
        caption = captions.get(key, "")
        if not caption:
            stats.record("no_caption", key)
            continue
        ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if ext is None:
            stats.record("no_image", key)
            continue
        keys.append(key)
        img_off.append(members[ext][0])
        img_size.append(members[ext][1])
        img_ext.append(ext)
        caps.append(caption)
        js = members.get("json", (-1, 0))
        js_off.append(js[0])
        js_size.append(js[1])
    return ShardIndex(
        shard=shard,
        keys=keys,
        image_offset=np.asarray(img_off, dtype=np.int64),
        image_size=np.asarray(img_size, dtype=np.int64),
        image_ext=img_ext,
        captions=caps,
        json_offset=np.asarray(js_off, dtype=np.int64),
        json_size=np.asarray(js_size, dtype=np.int64),
    )


def _write(index: ShardIndex, path: Path, signature: str) -> None:
    table = pa.table(
        {
            "key": pa.array(index.keys, pa.string()),
            "image_offset": index.image_offset,
            "image_size": index.image_size,
            "image_ext": pa.array(index.image_ext, pa.string()),
            "caption": pa.array(index.captions, pa.string()),
            "json_offset": index.json_offset,
            "json_size": index.json_size,
        }
    ).replace_schema_metadata({"signature": signature})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic: concurrent builders never see a half-written index


def _read(shard: str, path: Path, signature: str) -> Optional[ShardIndex]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid):
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"signature", b"").decode() != signature:
        return None
    cols = table.to_pydict()
    return ShardIndex(
        shard=shard,
        keys=cols["key"],
        image_offset=np.asarray(cols["image_offset"], dtype=np.int64),
        image_size=np.asarray(cols["image_size"], dtype=np.int64),
        image_ext=cols["image_ext"],
        captions=cols["caption"],
        json_offset=np.asarray(cols["json_offset"], dtype=np.int64),
        json_size=np.asarray(cols["json_size"], dtype=np.int64),
    )


def load_shard_index(shard: str, stats: Optional[SkipStats] = None) -> ShardIndex:
    """The index of ``shard``, read from its cache or built (and cached) by scanning the tar."""
    signature = _signature(shard)
    path = index_path(shard)
    if path.exists():
        cached = _read(shard, path, signature)
        if cached is not None:
            return cached
    index = _scan(shard, stats if stats is not None else SkipStats())
    try:
        _write(index, path, signature)
    except OSError as err:
        log.warning("could not cache the index of %s at %s (%s); it will be rebuilt next time", shard, path, err)
    return index
