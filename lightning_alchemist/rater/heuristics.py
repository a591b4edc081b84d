"""Model-free raters: the heuristics a data team already filters with, written as ratings.

    python -m lightning_alchemist.rater.heuristics --data shapes --score compressed_size --out DIR

Each heuristic turns a pool sample into one number (its *value*) with no model:

- ``compressed_size``: bytes per pixel of the image re-encoded as PNG (or JPEG) at the training
  resolution: flat images compress to almost nothing, noise does not compress;
- ``entropy``: Shannon entropy (bits) of the 256-bin grey-level histogram;
- ``color_variance``: the variance of pixel values in [0, 1], averaged over R, G, B;
- ``caption_length``: words in the caption;
- ``column``: a numeric field of the sample's ``.json`` (an aesthetic score, a CLIP similarity; a
  dotted path reaches nested fields).

The rating is the value oriented to the project's ranking convention (DESIGN.md §1: the highest
ratings are the "too easy" head, the lowest the noise): image heuristics rate *simple* images
high (``rating = −value``: a plain background tops the ranking, noise sits at the bottom), so
Shift-Gaussian's head and tail mean the same as with a learned rater; ``caption_length`` and
``column`` rate high values high (``column.higher_is_better=false`` flips a column such as a
watermark probability). The raw value is kept beside the rating in a ``value`` column.

Each heuristic declares its natural *band*, the part of the rating ranking a team keeps:
``middle`` for the image statistics (drop both the flat and the noisy ends), ``top`` for caption
length and score columns. :func:`band_strategy` maps a band to a selection strategy
(``middle``: ``Block(centre=0.5)``, i.e. ``selection=middle``; ``top``: ``topk``; ``bottom``: ``bottomk``).

Ratings follow the learned scorer's contract (:mod:`lightning_alchemist.rater.writer`): one
Parquet file per pool shard, written atomically, the config fingerprint in each file, so a rerun
skips finished shards and every strategy, the select recipe and the callback read them as they
are. Samples whose image cannot be decoded, or whose column is missing or not a number, get no
rating; they are counted by reason (never fatal) and the counts go to ``heuristic_summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
from PIL import Image

from lightning_alchemist.config import to_dataclass
from lightning_alchemist.data.decode import SampleDecoder, SkipStats
from lightning_alchemist.data.mapstyle import ShardDataset
from lightning_alchemist.data.transforms import CenterCropResize
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.rater.writer import finished_shards, write_ratings_file
from lightning_alchemist.selection.ratings import Ratings
from lightning_alchemist.selection.strategies import Block, BottomK, Strategy, TopK

__all__ = [
    "BANDS",
    "HEURISTICS",
    "Heuristic",
    "HeuristicConfig",
    "HeuristicRun",
    "band_strategy",
    "caption_length",
    "color_variance",
    "column_value",
    "compressed_size",
    "grey_entropy",
    "heuristic_config",
    "heuristic_ratings",
    "natural_strategy",
    "rater_group_config",
    "run_heuristic",
]

log = logging.getLogger(__name__)

# Bump when a heuristic's value changes meaning: it invalidates ratings written before.
HEURISTIC_VERSION = 1
BANDS = ("top", "middle", "bottom")
CODECS = ("png", "jpeg")


# ----------------------------------------------------------------------------- the values


def compressed_size(image: Image.Image, codec: str = "png", quality: int = 90) -> float:
    """Bytes per pixel of ``image`` encoded with ``codec`` (PNG at PIL's default level 6, or JPEG at ``quality``)."""
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if codec == "png":
        rgb.save(buffer, format="PNG")
    elif codec == "jpeg":
        rgb.save(buffer, format="JPEG", quality=quality)
    else:
        raise ConfigError(f"config 'rater.codec': got '{codec}', expected one of {list(CODECS)}")
    return buffer.tell() / (rgb.size[0] * rgb.size[1])


def grey_entropy(image: Image.Image) -> float:
    """Shannon entropy in bits of the 256-bin histogram of the grey image (PIL's ITU-R 601-2 luma): 0 for a flat image, at most 8."""
    counts = np.asarray(image.convert("L").histogram(), dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: a flat image gives 0.0, not -0.0


def color_variance(image: Image.Image) -> float:
    """Variance of pixel values scaled to [0, 1], per channel over all pixels, averaged over R, G, B."""
    array = np.asarray(image.convert("RGB"), dtype=np.float64)  # integer values: a flat image gives exactly 0
    return float(array.reshape(-1, 3).var(axis=0).mean() / 255.0**2)


def caption_length(caption: str) -> int:
    """Whitespace-separated words in ``caption``."""
    return len(caption.split())


def column_value(meta: Mapping[str, Any], column: str) -> tuple[Optional[float], str]:
    """``(value, "")`` for a numeric field of ``meta`` (a dotted path reaches nested fields), else ``(None, reason)``.

    Numbers, booleans (0/1) and numeric strings count; NaN, infinities and anything else are
    ``non_numeric``; an absent field (or a null) is ``missing_column``.
    """
    node: Any = meta
    for part in column.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None, "missing_column"
        node = node[part]
    if node is None:
        return None, "missing_column"
    try:
        value = float(node)  # bool, int, float, "0.7"
    except (TypeError, ValueError):
        return None, "non_numeric"
    if not math.isfinite(value):
        return None, "non_numeric"
    return value, ""


@dataclass(frozen=True)
class Heuristic:
    """A model-free rating: what it reads, its unit, its orientation and its natural band.

    ``rating = sign · value``; ``band`` is the part of the *rating* ranking a team keeps.
    """

    name: str
    reads: str  # "image" | "caption" | "meta"
    unit: str
    sign: float
    band: str
    description: str


HEURISTICS: dict[str, Heuristic] = {
    h.name: h
    for h in (
        Heuristic("compressed_size", "image", "bytes/pixel", -1.0, "middle",
                  "PNG/JPEG bytes per pixel at the training resolution; keep the middle (drop flat and noisy ends)"),
        Heuristic("entropy", "image", "bits", -1.0, "middle",
                  "grey-level histogram entropy; keep the middle"),
        Heuristic("color_variance", "image", "variance", -1.0, "middle",
                  "pixel variance in [0, 1], mean over R, G, B; keep the middle"),
        Heuristic("caption_length", "caption", "words", 1.0, "top",
                  "words in the caption; keep the longest"),
        Heuristic("column", "meta", "value", 1.0, "top",
                  "a numeric field of each sample's .json; keep the best (higher_is_better sets which end)"),
    )
}


def band_strategy(band: str) -> Strategy:
    """The selection strategy that keeps ``band`` of the rating ranking: top, middle or bottom."""
    if band == "top":
        return TopK()
    if band == "bottom":
        return BottomK()
    if band == "middle":
        return Block(centre=0.5)
    raise ConfigError(f"band '{band}': expected one of {list(BANDS)}")


def natural_strategy(score: str) -> Strategy:
    """The strategy of heuristic ``score``'s natural band (e.g. the middle for ``compressed_size``)."""
    if score not in HEURISTICS:
        raise ConfigError(f"config 'rater.score': unknown heuristic '{score}', expected one of {sorted(HEURISTICS)}")
    return band_strategy(HEURISTICS[score].band)


# ----------------------------------------------------------------------------- config


@dataclass
class HeuristicConfig:
    """Schema of ``conf/rater/heuristic.yaml``: a model-free rater in place of the learned one."""

    name: str = "heuristic"
    # compressed_size | entropy | color_variance | caption_length | column
    score: str = "compressed_size"
    # score=column: the .json field (dotted for nested), e.g. AESTHETIC_SCORE or similarity.
    column: Optional[str] = None
    # score=column: false rates low values high (e.g. a watermark probability).
    higher_is_better: bool = True
    # score=compressed_size: png | jpeg, and the JPEG quality.
    codec: str = "png"
    jpeg_quality: int = 90
    # Side of the square image the statistics are taken at; null: the pool's training resolution.
    image_size: Optional[int] = None
    # Processes over shards (1: in this process; 0: one per CPU).
    workers: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.name != "heuristic":
            raise ConfigError(f"config 'rater.name': got '{self.name}', expected 'heuristic' for a model-free rater")
        if self.score not in HEURISTICS:
            raise ConfigError(f"config 'rater.score': unknown heuristic '{self.score}', expected one of {sorted(HEURISTICS)}")
        if self.score == "column" and not self.column:
            raise ConfigError(
                "config 'rater.column' is required for rater.score=column: name a numeric .json field, e.g. rater.column=aesthetic"
            )
        if self.codec not in CODECS:
            raise ConfigError(f"config 'rater.codec': got '{self.codec}', expected one of {list(CODECS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"config 'rater.jpeg_quality': got {self.jpeg_quality}, expected 1..100")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"config 'rater.image_size': got {self.image_size}, expected a positive side or null")
        if self.workers < 0:
            raise ConfigError(f"config 'rater.workers': got {self.workers}, expected >= 0 (0: one per CPU)")

    @property
    def heuristic(self) -> Heuristic:
        return HEURISTICS[self.score]

    @property
    def sign(self) -> float:
        """``rating = sign · value``."""
        flip = self.score == "column" and not self.higher_is_better
        return -self.heuristic.sign if flip else self.heuristic.sign

    def identity(self) -> dict[str, Any]:
        """The fields that change the ratings (for the fingerprint): not workers or progress."""
        out: dict[str, Any] = {"score": self.score}
        if self.score == "column":
            out.update(column=self.column, higher_is_better=self.higher_is_better)
        if self.score == "compressed_size":
            out["codec"] = self.codec
            if self.codec == "jpeg":
                out["jpeg_quality"] = self.jpeg_quality
        return out


def heuristic_config(node: Any) -> HeuristicConfig:
    """Validate a ``rater`` node of the heuristic kind (a DictConfig, dict, dataclass or a score name)."""
    if isinstance(node, str):
        node = {"score": node}
    return to_dataclass(node, HeuristicConfig, "rater")


def rater_group_config(node: Any) -> Any:
    """The ``rater`` group's validator: :class:`HeuristicConfig` for ``name: heuristic``, else the learned rater's config."""
    name = node.get("name") if hasattr(node, "get") else getattr(node, "name", None)
    if name == "heuristic" or isinstance(node, HeuristicConfig):
        return heuristic_config(node)
    from lightning_alchemist.rater.config import rater_config

    return rater_config(node)


# ----------------------------------------------------------------------------- rating a pool


class _Image:
    """Decoder transform: the pool's crop and resize, kept as a PIL image (no tensor)."""

    def __init__(self, size: int) -> None:
        self.crop = CenterCropResize(size)

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.crop.image(image)


def _value_fn(cfg: HeuristicConfig) -> Callable[[Image.Image], float]:
    if cfg.score == "compressed_size":
        return lambda im: compressed_size(im, cfg.codec, cfg.jpeg_quality)
    if cfg.score == "entropy":
        return grey_entropy
    return color_variance


def _rate_shard(pool: ShardDataset, cfg: HeuristicConfig, size: int, first: int, count: int,
                stats: SkipStats) -> tuple[list[str], np.ndarray]:
    """Keys and values of pool rows ``[first, first + count)`` (one shard); skips are counted in ``stats``.

    One ``stats`` per process for the whole run, so each reason logs its first keys once, not once per shard.
    """
    keys: list[str] = []
    values: list[float] = []
    reads = cfg.heuristic.reads
    if reads == "caption":  # captions are in the shard index: no member is read
        for i in range(first, first + count):
            keys.append(pool.keys[i])
            values.append(float(caption_length(pool.captions[i])))
    elif reads == "meta":
        assert cfg.column is not None
        for i in range(first, first + count):
            key = pool.keys[i]
            member = pool.raw(i).get("json")
            if member is None:
                stats.record("no_json", key)
                continue
            try:
                meta = json.loads(member.decode("utf-8", errors="replace"))
            except ValueError as err:
                stats.record("bad_json", key, str(err))
                continue
            value, reason = column_value(meta if isinstance(meta, dict) else {}, cfg.column)
            if value is None:
                stats.record(reason, key, f"column '{cfg.column}'")
                continue
            keys.append(key)
            values.append(value)
    else:
        decoder = SampleDecoder(_Image(size), stats)  # counts corrupt images, missing members
        fn = _value_fn(cfg)
        for i in range(first, first + count):
            sample = decoder(pool.raw(i))
            if sample is None:
                continue
            keys.append(sample["key"])
            values.append(fn(sample["image"]))
    return keys, np.asarray(values, dtype=np.float64)


# Set in forked workers only (the pool is inherited, never pickled).
_WORKER: dict[str, Any] = {}


def _worker_init(pool: ShardDataset, cfg: HeuristicConfig, size: int) -> None:
    _WORKER.update(pool=pool, cfg=cfg, size=size, stats=SkipStats())


def _worker_task(job: tuple[int, int, int]) -> tuple[int, list[str], np.ndarray, dict[str, int], dict[str, list[str]]]:
    sid, first, count = job
    stats: SkipStats = _WORKER["stats"]
    before = Counter(stats.counts)
    keys, values = _rate_shard(_WORKER["pool"], _WORKER["cfg"], _WORKER["size"], first, count, stats)
    return sid, keys, values, dict(stats.counts - before), stats.keys


def _pool_of(data: Any) -> ShardDataset:
    pool = getattr(data, "pool", data)  # a T2IDataModule gives its pool
    if not isinstance(pool, ShardDataset):
        raise DataError(f"heuristic ratings need a map-style pool (ShardDataset or T2IDataModule), got {type(data).__name__}")
    return pool


def _image_size(pool: ShardDataset, cfg: HeuristicConfig) -> int:
    if cfg.image_size is not None:
        return cfg.image_size
    transform = getattr(pool.decoder, "transform", None)
    if isinstance(transform, CenterCropResize):
        return transform.size
    raise ConfigError("config 'rater.image_size': the pool's decoder has no CenterCropResize to take the training resolution from; set it")


def heuristic_fingerprint(pool: ShardDataset, cfg: HeuristicConfig, size: int) -> str:
    """16 hex digits naming (heuristic and its options, resolution, the pool's shards and keys per shard)."""
    shards = []
    for info in pool.shards:
        st = os.stat(info.path) if os.path.exists(info.path) else None
        shards.append([info.stem, info.num_samples, st.st_size if st else None, st.st_mtime_ns if st else None])
    payload = {"kind": "heuristic", "version": HEURISTIC_VERSION, "config": cfg.identity(),
               "image_size": size if cfg.heuristic.reads == "image" else None, "shards": shards}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=8).hexdigest()


@dataclass
class HeuristicRun:
    """What :func:`run_heuristic` did: the ratings and the counts of this run."""

    ratings: Ratings
    ratings_dir: Path
    fingerprint: str
    rated: int  # rows written by this run (reused shards not included)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> samples, this run
    shards_written: int = 0
    shards_reused: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "ratings": str(self.ratings_dir), "rows": len(self.ratings),
                "rated_this_run": self.rated, "skipped": self.skipped, "shards_written": self.shards_written,
                "shards_reused": self.shards_reused, "seconds": round(self.seconds, 2)}


def run_heuristic(
    data: Any,
    cfg: Union[HeuristicConfig, Mapping[str, Any], str],
    out: Union[str, os.PathLike],
    overwrite: bool = False,
) -> HeuristicRun:
    """Rate every pool sample with a heuristic into ``out/ratings/<shard>.parquet``; see :func:`heuristic_ratings`."""
    cfg = heuristic_config(cfg)
    pool = _pool_of(data)
    size = _image_size(pool, cfg)
    out = Path(out)
    ratings_dir = out / "ratings"
    ratings_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = heuristic_fingerprint(pool, cfg, size)
    done = finished_shards(ratings_dir, fingerprint, overwrite=overwrite)
    jobs, first = [], 0
    for sid, info in enumerate(pool.shards):
        if info.num_samples and info.stem not in done:
            jobs.append((sid, first, info.num_samples))
        first += info.num_samples
    reused = sum(1 for info in pool.shards if info.stem in done)
    t0 = time.perf_counter()
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    rated = written = 0
    total = sum(j[2] for j in jobs)
    bar = _progress(cfg, total, f"{cfg.score}")
    workers = cfg.workers or (os.cpu_count() or 1)
    try:
        if workers > 1 and len(jobs) > 1:
            from multiprocessing import get_context

            with get_context("fork").Pool(min(workers, len(jobs)), _worker_init, (pool, cfg, size)) as procs:
                results = procs.imap(_worker_task, jobs)  # in shard order; a result is one shard's keys and values
                for (sid, _, count), (_, keys, values, counts, keys_by_reason) in zip(jobs, results):
                    written += _write_shard(ratings_dir, pool.shards[sid].stem, keys, values, cfg, fingerprint)
                    rated += len(keys)
                    skipped.update(counts)
                    for reason, ks in keys_by_reason.items():
                        examples.setdefault(reason, ks[:3])
                    bar.update(count)
        else:
            stats = SkipStats()
            for sid, first_row, count in jobs:
                keys, values = _rate_shard(pool, cfg, size, first_row, count, stats)
                written += _write_shard(ratings_dir, pool.shards[sid].stem, keys, values, cfg, fingerprint)
                rated += len(keys)
                bar.update(count)
            skipped.update(stats.counts)
            examples = {reason: ks[:3] for reason, ks in stats.keys.items()}
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if skipped:
        parts = "; ".join(f"{n} {reason} (e.g. {', '.join(examples.get(reason, []))})" for reason, n in sorted(skipped.items()))
        log.warning("heuristic %s: skipped %d of %d samples: %s", cfg.score, sum(skipped.values()), total, parts)
    if rated == 0 and reused == 0:
        what = f"a numeric '{cfg.column}' in its .json" if cfg.score == "column" else "a decodable image"
        raise DataError(
            f"heuristic '{cfg.score}': no pool sample has {what} ({dict(skipped)} of {total} skipped); "
            + ("check rater.column against the dataset's .json fields" if cfg.score == "column" else "check the data")
        )
    ratings = Ratings.read([ratings_dir / f"{info.stem}.parquet" for info in pool.shards
                            if (ratings_dir / f"{info.stem}.parquet").is_file()])
    run = HeuristicRun(ratings, ratings_dir, fingerprint, rated, dict(sorted(skipped.items())), written, reused, seconds)
    summary = {"heuristic": asdict(cfg), "band": cfg.heuristic.band, "sign": cfg.sign, **run.summary()}
    tmp = out / "heuristic_summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "heuristic_summary.json")
    return run


def heuristic_ratings(
    data: Any,
    cfg: Union[HeuristicConfig, Mapping[str, Any], str],
    out: Union[str, os.PathLike],
    overwrite: bool = False,
) -> Ratings:
    """Rate every sample of a pool with a model-free heuristic; the ratings, also written to ``out/ratings/``.

    Args:
        data: the pool: a map-style :class:`~lightning_alchemist.data.mapstyle.ShardDataset` or a
            prepared :class:`~lightning_alchemist.data.datamodule.T2IDataModule` (its ``pool``).
        cfg: a :class:`HeuristicConfig`, the ``rater`` node of ``rater=heuristic``, or a score name.
        out: folder; ratings go to ``out/ratings/<shard>.parquet`` (key, rating, value) and the run's
            counts to ``out/heuristic_summary.json``. Shards already rated with the same fingerprint are reused.
        overwrite: re-rate shards rated under another config instead of refusing them.

    Raises:
        DataError: no sample could be rated (e.g. the column exists nowhere).
        AlchemistError: ``out/ratings`` holds ratings of another config (without ``overwrite``).
    """
    return run_heuristic(data, cfg, out, overwrite=overwrite).ratings


def _write_shard(ratings_dir: Path, stem: str, keys: list[str], values: np.ndarray, cfg: HeuristicConfig, fingerprint: str) -> int:
    if not keys:  # nothing rateable in this shard: no file (as the learned scorer)
        return 0
    write_ratings_file(ratings_dir / f"{stem}.parquet", {"key": keys, "rating": cfg.sign * values, "value": values}, fingerprint)
    return 1


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(cfg: HeuristicConfig, total: int, desc: str) -> Any:
    if not cfg.progress or total == 0:
        return _NoBar()
    from lightning_alchemist.runtime import progress_bar

    return progress_bar(total=total, desc=f"rating ({desc})", unit="sample", unit_scale=True, dynamic_ncols=True)


# ----------------------------------------------------------------------------- command line


def _datamodule(data: str, image_size: Optional[int], val_fraction: float, seed: int) -> Any:
    from lightning_alchemist.data.datamodule import T2IDataModule

    shards = os.path.exists(data) or any(c in data for c in "/*?{")
    # An embedded dataset by name (shapes, ...) or webdataset shards.
    node: dict[str, Any] = {"name": "wds", "urls": data, "val_fraction": val_fraction} if shards else {"name": data}
    if image_size:
        node["image_size"] = image_size
    dm = T2IDataModule(node, seed=seed)
    dm.prepare_data()
    return dm


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Rate a pool with a model-free heuristic (ratings/ as the learned scorer writes them).")
    parser.add_argument("--data", required=True, help="an embedded dataset ('shapes') or webdataset shards (folder, glob, brace pattern)")
    parser.add_argument("--score", default="compressed_size", choices=sorted(HEURISTICS))
    parser.add_argument("--out", required=True, help="output folder: OUT/ratings/<shard>.parquet and OUT/heuristic_summary.json")
    parser.add_argument("--column", default=None, help="--score column: the numeric .json field")
    parser.add_argument("--lower-is-better", action="store_true", help="--score column: rate low values high")
    parser.add_argument("--codec", default="png", choices=CODECS)
    parser.add_argument("--image-size", type=int, default=None, help="training resolution (default: the data config's, 32)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="shards without a validation split: the held-out share (not rated)")
    parser.add_argument("--workers", type=int, default=1, help="processes over shards (0: one per CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace ratings of another config in OUT/ratings")
    args = parser.parse_args(argv)
    from lightning_alchemist.errors import AlchemistError

    try:
        cfg = heuristic_config({"score": args.score, "column": args.column, "higher_is_better": not args.lower_is_better,
                                "codec": args.codec, "workers": args.workers})
        dm = _datamodule(args.data, args.image_size, args.val_fraction, args.seed)
        run = run_heuristic(dm, cfg, args.out, overwrite=args.overwrite)
    except AlchemistError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(run.summary()))
    print(f"rated {len(run.ratings)} samples by {cfg.score} -> {run.ratings_dir}; natural band: {cfg.heuristic.band} "
          f"(selection={'middle' if cfg.heuristic.band == 'middle' else 'topk'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
