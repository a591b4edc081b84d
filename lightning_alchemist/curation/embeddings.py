"""Per-sample embeddings for curation, keyed by sample key and stored once.

Three sources, in the order a team would prefer them (``reference/curation.md`` §3):

- a **sidecar** the user gives: a ``.npz`` holding ``keys`` and an array (DataComp ships ``b32_img`` ...),
  or a Parquet file with a ``key`` column and a list column (``embedding``);
- the **ratings** folder, when the scorer wrote an ``embedding`` list column beside ``rating`` (opt-in);
- the built-in **thumbnail** fallback for any dataset, no model and no download: an image thumbnail
  (``thumb × thumb`` colour, box-filtered after a Gaussian blur, so a shift of a pixel or two barely moves it)
  and the caption's hashed word uni- and bigrams, joined,
  projected to ``dim`` by a seeded Gaussian matrix, centred on the pool's mean and L2-normalised.
  It measures low-level similarity, not semantics: exact copies get cosine 1, near-copies (a re-encode,
  faint noise, a pixel of jitter) stay close to 1, different scenes fall well below.

On disk (:meth:`Embeddings.write`): ``embeddings.npy`` (float32 ``[N, dim]``, memory-mapped on read) and
``embeddings_keys.parquet`` (``key``), row-aligned, plus ``embeddings.json`` (source, dimension, counts).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_alchemist.config import Choice
from lightning_alchemist.errors import ConfigError, DataError

__all__ = [
    "EMBEDDINGS_VERSION",
    "EmbeddingSource",
    "Embeddings",
    "EmbeddingsConfig",
    "caption_features",
    "embeddings_from_ratings",
    "load_sidecar",
    "pool_embeddings",
    "thumbnail_embeddings",
    "thumbnail_features",
]

log = logging.getLogger(__name__)

EMBEDDINGS_VERSION = 2  # bump when the fallback's features change (it keys the cache)
_TOKEN = re.compile(r"[a-z0-9]+")


class EmbeddingSource(Choice):
    thumbnail = "thumbnail"
    sidecar = "sidecar"
    ratings = "ratings"


@dataclass
class EmbeddingsConfig:
    """Where the curation embeddings come from (schema of ``curation.embeddings``)."""

    # thumbnail: the built-in fallback; sidecar: `path` (.npz or .parquet); ratings: an `embedding` column the scorer wrote.
    source: EmbeddingSource = EmbeddingSource.thumbnail
    path: Optional[str] = None
    # The sidecar's array (.npz; null: the only array besides `keys`) or list column (.parquet).
    column: Optional[str] = None
    # The fallback: output dimension, thumbnail side (pixels), caption hash buckets, caption share of the joint vector.
    dim: int = 64
    thumb: int = 8
    # Gaussian blur radius before the thumbnail, in pixels of a 64-px image (scaled with the image): a near-copy
    # shifted by a pixel or two stays close (measured: benchmarks/results/curation.md); 0: none.
    blur: float = 3.0
    caption_buckets: int = 4096
    caption_weight: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in EmbeddingSource.values():
            raise ConfigError(f"config 'curation.embeddings.source': got '{self.source}', expected one of "
                              f"{', '.join(EmbeddingSource.values())}")
        if self.source == "sidecar" and not self.path:
            raise ConfigError("config 'curation.embeddings.path' is required with source=sidecar: pass the .npz or .parquet file")
        if self.blur < 0:
            raise ConfigError(f"config 'curation.embeddings.blur': got {self.blur}, expected >= 0")
        for name in ("dim", "thumb", "caption_buckets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config 'curation.embeddings.{name}': got {getattr(self, name)}, expected >= 1")
        if not 0.0 <= self.caption_weight <= 1.0:
            raise ConfigError(f"config 'curation.embeddings.caption_weight': got {self.caption_weight}, expected in [0, 1]")

    def identity(self) -> dict[str, Any]:
        """What the embeddings depend on (the cache key, with the data's identity)."""
        out: dict[str, Any] = {"source": str(self.source), "version": EMBEDDINGS_VERSION}
        if self.source == "thumbnail":
            out.update(dim=self.dim, thumb=self.thumb, blur=self.blur, caption_buckets=self.caption_buckets,
                       caption_weight=self.caption_weight, seed=self.seed)
        else:
            path = Path(self.path) if self.path else None
            st = path.stat() if path is not None and path.exists() else None
            out.update(path=str(path), column=self.column, size=st.st_size if st else None, mtime=st.st_mtime_ns if st else None)
        return out


@dataclass
class Embeddings:
    """Row-aligned ``keys`` (pyarrow strings) and L2-normalised ``vectors`` (float32 ``[N, dim]``)."""

    keys: pa.ChunkedArray
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from lightning_alchemist.selection.ratings import _as_chunked_strings

        self.keys = _as_chunked_strings(self.keys)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.keys):
            raise DataError(f"embeddings: {len(self.keys)} keys but vectors of shape {self.vectors.shape}; expected [N, dim]")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def align(self, keys: Union[pa.ChunkedArray, pa.Array, Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``keys`` here: ``(rows, found)``; ``rows[i]`` is valid where ``found[i]``."""
        from lightning_alchemist.selection.ratings import _as_chunked_strings

        keys = _as_chunked_strings(keys)
        value_set = self.keys.combine_chunks() if self.keys.num_chunks != 1 else self.keys.chunk(0)
        idx = pc.index_in(keys, value_set=value_set)
        found = idx.is_valid().to_numpy(zero_copy_only=False)
        rows = idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return rows, found

    def write(self, folder: Union[str, os.PathLike]) -> Path:
        """``folder/embeddings.npy`` + ``embeddings_keys.parquet`` + ``embeddings.json`` (each written atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tag = f".{os.getpid()}.tmp"  # per process: DDP ranks may build the same cached stage side by side
        with open(folder / f"embeddings.npy{tag}", "wb") as fh:
            np.save(fh, np.ascontiguousarray(self.vectors, dtype=np.float32))
        pq.write_table(pa.table({"key": self.keys}), folder / f"embeddings_keys.parquet{tag}")
        (folder / f"embeddings.json{tag}").write_text(json.dumps({"rows": len(self), "dim": self.dim, **self.meta},
                                                                 indent=2, default=str))
        for name in ("embeddings_keys.parquet", "embeddings.json", "embeddings.npy"):
            os.replace(folder / f"{name}{tag}", folder / name)
        return folder

    @classmethod
    def read(cls, folder: Union[str, os.PathLike], mmap: bool = True) -> "Embeddings":
        """Read what :meth:`write` wrote (the vectors memory-mapped unless ``mmap=False``)."""
        folder = Path(folder)
        if not (folder / "embeddings.npy").is_file():
            raise DataError(f"embeddings '{folder}': no embeddings.npy there; compute them with the curation stage first")
        vectors = np.load(folder / "embeddings.npy", mmap_mode="r" if mmap else None)
        keys = pq.read_table(folder / "embeddings_keys.parquet").column("key")
        meta_path = folder / "embeddings.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(keys, vectors, meta)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), in float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ----------------------------------------------------------------------------- the built-in fallback


def thumbnail_features(image: Any, thumb: int = 8, blur: float = 0.0) -> np.ndarray:
    """A ``thumb × thumb`` RGB thumbnail (box filter: the mean of each cell) in [0, 1], flattened (``3·thumb²``).

    ``blur``: a Gaussian blur radius first, in pixels of a 64-px image (scaled to the image's width).
    """
    from PIL import Image, ImageFilter

    im = image.convert("RGB") if image.mode != "RGB" else image
    if blur > 0:
        im = im.filter(ImageFilter.GaussianBlur(blur * im.size[0] / 64))
    small = im.resize((thumb, thumb), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def _token_hash(token: str, buckets: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % buckets, 1.0 if (value >> 63) & 1 else -1.0


def caption_features(caption: str, buckets: int = 4096) -> np.ndarray:
    """Signed hashing of the caption's lower-cased word uni- and bigrams into ``buckets``, L2-normalised (stable hash)."""
    out = np.zeros(buckets, dtype=np.float32)
    words = _TOKEN.findall(caption.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    for gram in grams:
        slot, sign = _token_hash(gram, buckets)
        out[slot] += sign
    norm = float(np.linalg.norm(out))
    return out / norm if norm > 0 else out


def _projection(rows: int, dim: int, seed: int) -> np.ndarray:
    from lightning_alchemist.selection.draw import make_rng

    return (make_rng(seed, 7321).standard_normal((rows, dim)) / np.sqrt(dim)).astype(np.float32)


def thumbnail_embeddings(images: Sequence[Any], captions: Sequence[str], keys: Sequence[str],
                         cfg: Optional[EmbeddingsConfig] = None) -> Embeddings:
    """The fallback embeddings of in-memory PIL images and captions (see the module docstring)."""
    cfg = cfg or EmbeddingsConfig()
    feats = [thumbnail_features(im, cfg.thumb, cfg.blur) for im in images]
    return _project(np.stack(feats) if feats else np.zeros((0, 3 * cfg.thumb**2), np.float32), list(captions), keys, cfg)


def _project(thumbs: np.ndarray, captions: Sequence[str], keys: Any, cfg: EmbeddingsConfig,
             meta: Optional[dict] = None) -> Embeddings:
    """Joint features → seeded random projection → centred on the pool mean → unit rows.

    The thumbnail part is centred on the pool's mean thumbnail first: raw pixel vectors are all positive,
    so any two would have a high cosine; centred, only similar images do.
    """
    n = len(thumbs)
    img_rows, txt_rows = thumbs.shape[1], cfg.caption_buckets
    proj = _projection(img_rows + txt_rows, cfg.dim, cfg.seed)
    out = np.zeros((n, cfg.dim), dtype=np.float32)
    if n:
        centred = thumbs - thumbs.mean(axis=0, keepdims=True)
        img = normalise_rows(centred) * np.float32(np.sqrt(1.0 - cfg.caption_weight))
        out += img @ proj[:img_rows]
        if cfg.caption_weight > 0:
            w = np.float32(np.sqrt(cfg.caption_weight))
            for start in range(0, n, 4096):  # caption vectors are wide: a chunk at a time
                block = np.stack([caption_features(c, txt_rows) for c in captions[start:start + 4096]])
                out[start:start + len(block)] += (block * w) @ proj[img_rows:]
        out -= out.mean(axis=0, keepdims=True)
    info = {"source": "thumbnail", **cfg.identity(), **(meta or {})}
    return Embeddings(keys, normalise_rows(out), info)


def pool_embeddings(pool: Any, cfg: Optional[EmbeddingsConfig] = None, progress: bool = False) -> Embeddings:
    """The fallback embeddings of every sample of a map-style pool (``ShardDataset`` or a datamodule's ``pool``).

    A sample whose image cannot be decoded gets no embedding: skipped and counted (``meta["skipped"]``).
    """
    from PIL import Image

    from lightning_alchemist.data.decode import IMAGE_EXTENSIONS, first_member

    cfg = cfg or EmbeddingsConfig()
    pool = getattr(pool, "pool", pool)
    n = len(pool)
    thumbs = np.zeros((n, 3 * cfg.thumb**2), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for i in range(n):
        raw = pool.raw(i)
        data = first_member(raw, IMAGE_EXTENSIONS)
        reason = None
        if data is None:
            reason = "no_image"
        else:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    thumbs[i] = thumbnail_features(im, cfg.thumb, cfg.blur)
                ok[i] = True
            except Exception:  # PIL raises many types for corrupt files
                reason = "corrupt_image"
        if reason:
            skipped[reason] += 1
            seen = examples.setdefault(reason, [])
            if len(seen) < 3:
                seen.append(pool.keys[i])
    if skipped:
        log.warning("curation embeddings: skipped %d of %d samples (%s)", sum(skipped.values()), n,
                    "; ".join(f"{c} {r} e.g. {', '.join(examples[r])}" for r, c in sorted(skipped.items())))
    rows = np.flatnonzero(ok)
    keys = pa.array([pool.keys[i] for i in rows.tolist()], type=pa.string())
    captions = [pool.captions[i] for i in rows.tolist()]
    return _project(thumbs[rows], captions, keys, cfg, meta={"skipped": dict(skipped), "pool": n})


# ----------------------------------------------------------------------------- given embeddings


def _list_column_to_matrix(column: pa.ChunkedArray, where: str) -> np.ndarray:
    arr = column.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise DataError(f"embeddings {where}: column type {arr.type} is not a list of floats; write one vector per row")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != lengths.max() or arr.null_count):
        raise DataError(f"embeddings {where}: rows have different vector lengths ({lengths.min()}..{lengths.max()}) or nulls")
    width = int(lengths[0]) if len(lengths) else 0
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width)


def load_sidecar(path: Union[str, os.PathLike], column: Optional[str] = None) -> Embeddings:
    """Embeddings a user gives: a ``.npz`` (``keys`` + one array, or ``column``) or a Parquet file (``key`` + ``column``).

    Rows are L2-normalised; rows with a non-finite value are skipped and counted (``meta["skipped"]``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"embeddings sidecar '{path}' does not exist: pass curation.embeddings.path=FILE (.npz or .parquet)")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "keys" not in npz.files:
                raise DataError(f"embeddings sidecar '{path}': no 'keys' array (has {npz.files}); save keys= beside the vectors")
            arrays = [f for f in npz.files if f != "keys"]
            name = column or (arrays[0] if len(arrays) == 1 else None)
            if name is None or name not in npz.files:
                raise DataError(f"embeddings sidecar '{path}': pick the array with curation.embeddings.column (one of {arrays})")
            keys = [str(k) for k in npz["keys"].tolist()]
            vectors = np.asarray(npz[name], dtype=np.float32)
    elif path.suffix == ".parquet":
        name = column or "embedding"
        table = pq.read_table(path)
        if "key" not in table.column_names or name not in table.column_names:
            raise DataError(f"embeddings sidecar '{path}': needs columns 'key' and '{name}' (has {table.column_names}); "
                            "set curation.embeddings.column")
        keys = table.column("key").cast(pa.string())
        vectors = _list_column_to_matrix(table.column(name), f"'{path}' column '{name}'").astype(np.float32)
    else:
        raise DataError(f"embeddings sidecar '{path}': expected a .npz or .parquet file")
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise DataError(f"embeddings sidecar '{path}': {len(keys)} keys but an array of shape {vectors.shape}")
    return _clean(keys, vectors, {"source": "sidecar", "path": str(path), "column": name})


def _clean(keys: Any, vectors: np.ndarray, meta: dict) -> Embeddings:
    good = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    bad = int((~good).sum())
    if bad:
        log.warning("embeddings from %s: skipped %d rows with non-finite or all-zero vectors", meta.get("path"), bad)
        from lightning_alchemist.selection.ratings import _as_chunked_strings

        keys = _as_chunked_strings(keys).filter(pa.array(good))
        vectors = vectors[good]
    return Embeddings(keys, normalise_rows(vectors), {**meta, "skipped": {"bad_vector": bad} if bad else {}})


def embeddings_from_ratings(folder: Union[str, os.PathLike], column: Optional[str] = None) -> Embeddings:
    """The ``embedding`` list column (or ``column``) of a ratings folder's Parquet files, when the scorer wrote one."""
    from lightning_alchemist.selection.ratings import find_rating_files

    name = column or "embedding"
    keys, mats = [], []
    for path in find_rating_files(Path(folder)):
        table = pq.read_table(path)
        if name not in table.column_names:
            raise DataError(f"ratings file '{path}' has no '{name}' column (has {table.column_names}): the scorer did not "
                            "write embeddings; use curation.embeddings.source=thumbnail or a sidecar")
        keys.append(table.column("key").cast(pa.string()))
        mats.append(_list_column_to_matrix(table.column(name), f"'{path}' column '{name}'").astype(np.float32))
    all_keys = pa.chunked_array([c for k in keys for c in k.chunks], type=pa.string())
    return _clean(all_keys, np.concatenate(mats) if mats else np.zeros((0, 1), np.float32),
                  {"source": "ratings", "path": str(folder), "column": name})
