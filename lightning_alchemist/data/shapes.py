"""``shapes``: the embedded, generated text-to-image dataset with defects of known kinds.

Each clean sample shows 1–3 objects (shape, colour, size, position) on a coloured background,
captioned from a small grammar, e.g. "a small red circle above a large blue square on a white
background". A configurable share of the pool is defective, modelled on what the Alchemist paper
found at the ends of its ranking:

- ``plain``: an empty or near-empty solid background with a generic caption (the too-easy product shot);
- ``chaotic``: noise or dense clutter;
- ``mismatch``: a correct image with the caption of another scene;
- ``duplicate``: genuine copies of a few clean samples under other keys, as a web crawl has them: the
  source's pixels stored byte-identical, losslessly re-encoded (same pixels, other bytes) or through a
  high-quality JPEG round trip (stored back as PNG); ~4 copies per source. The ``.json`` names the
  source (``copy_of``) and the copy's ``encoding`` (``identical``, ``reencoded``, ``jpeg``);
- ``degraded``: heavy blur or low resolution.

The validation split is always clean. The defect kind of each key goes into ``labels.parquet``
(for evaluation and benchmarks only: nothing that rates or selects may read it); each sample's
``.json`` describes the drawn scene. Generation is deterministic for a config and cached.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, features

from lightning_alchemist.config import ShapesConfig
from lightning_alchemist.data import generated
# CLEAN and read_labels are also this module's API (recipes, reports and benchmarks import them from here).
from lightning_alchemist.data.generated import CLEAN, degrade, png_bytes, read_labels, sample_key, scene_rng  # noqa: F401

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"  # 2: duplicates are genuine copies (were re-rendered near-copies)
DEFECT_KINDS = ("plain", "chaotic", "mismatch", "duplicate", "degraded")

SHAPES = ("circle", "square", "triangle", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SIZES = {"small": 0.2, "large": 0.36}  # object side as a fraction of the image side
ONE_OBJECT_POSITIONS = {
    "on the left": (0.27, 0.5),
    "on the right": (0.73, 0.5),
    "at the top": (0.5, 0.27),
    "at the bottom": (0.5, 0.73),
    "in the center": (0.5, 0.5),
}
RELATIONS = {  # relation of object A to object B -> (A centre, B centre)
    "above": ((0.5, 0.27), (0.5, 0.73)),
    "below": ((0.5, 0.73), (0.5, 0.27)),
    "to the left of": ((0.27, 0.5), (0.73, 0.5)),
    "to the right of": ((0.73, 0.5), (0.27, 0.5)),
}
THREE_OBJECT_SLOTS = ((0.25, 0.3), (0.75, 0.3), (0.5, 0.75))
# How a copy is stored, with its seeded probability: the same file, a lossless re-encode, a JPEG round trip.
COPY_ENCODINGS: dict[str, float] = {"identical": 0.4, "reencoded": 0.3, "jpeg": 0.3}
JPEG_QUALITY = (90, 95)  # inclusive; 4:4:4 chroma (an export at high quality), so colour edges do not bleed
PLAIN_CAPTIONS = (
    "a plain background",
    "an empty image",
    "a product photo",
    "a simple background",
    "a photo",
    "a minimal image",
)


class ShapesArtifacts(generated.GeneratedArtifacts):
    """Where a materialised ``shapes`` dataset lives."""


def _identity(cfg: ShapesConfig) -> dict[str, Any]:
    return {"v": GENERATOR_VERSION, **asdict(cfg)}  # the cache folder's fingerprint: never change the layout


def validate_shapes_config(cfg: ShapesConfig) -> None:
    """One-line :class:`ConfigError` naming the first bad key of ``data.shapes``."""
    generated.validate_generated_config(cfg, "shapes", DEFECT_KINDS)


# ----------------------------------------------------------------------------- scenes and captions


def random_scene(rng: np.random.Generator) -> dict[str, Any]:
    """A random clean scene: background colour and 1–3 objects with size, colour, shape, centre."""
    background = str(rng.choice(list(COLORS)))
    n = int(rng.integers(1, 4))
    palette = [c for c in COLORS if c != background]
    objects = []
    for _ in range(n):
        objects.append(
            {
                "shape": str(rng.choice(SHAPES)),
                "color": str(rng.choice(palette)),
                "size": str(rng.choice(list(SIZES))),
            }
        )
    scene: dict[str, Any] = {"background": background, "objects": objects}
    if n == 1:
        position = str(rng.choice(list(ONE_OBJECT_POSITIONS)))
        objects[0]["center"] = list(ONE_OBJECT_POSITIONS[position])
        scene["layout"] = position
    elif n == 2:
        relation = str(rng.choice(list(RELATIONS)))
        a, b = RELATIONS[relation]
        objects[0]["center"], objects[1]["center"] = list(a), list(b)
        scene["layout"] = relation
    else:
        for obj, slot in zip(objects, THREE_OBJECT_SLOTS):
            obj["center"] = list(slot)
        scene["layout"] = "row"
    return scene


def _phrase(obj: dict[str, Any]) -> str:
    return f"a {obj['size']} {obj['color']} {obj['shape']}"


def caption_of(scene: dict[str, Any]) -> str:
    """The grammar caption of a clean scene."""
    objs = scene["objects"]
    tail = f"on a {scene['background']} background"
    if len(objs) == 1:
        return f"{_phrase(objs[0])} {scene['layout']} {tail}"
    if len(objs) == 2:
        return f"{_phrase(objs[0])} {scene['layout']} {_phrase(objs[1])} {tail}"
    return f"{_phrase(objs[0])}, {_phrase(objs[1])} and {_phrase(objs[2])} {tail}"


# ----------------------------------------------------------------------------- drawing

_SUPERSAMPLE = 2  # draw at 2x and downsample: cheap anti-aliasing


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, half: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: dict[str, Any], resolution: int, jitter: Optional[np.random.Generator] = None) -> Image.Image:
    """Draw a scene; ``jitter`` shifts objects by a pixel or two (the judge's robustness renders)."""
    side = resolution * _SUPERSAMPLE
    image = Image.new("RGB", (side, side), COLORS[scene["background"]])
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        cx, cy = obj["center"][0] * side, obj["center"][1] * side
        if jitter is not None:
            cx += float(jitter.integers(-2, 3)) * _SUPERSAMPLE
            cy += float(jitter.integers(-2, 3)) * _SUPERSAMPLE
        half = SIZES[obj["size"]] * side / 2
        _draw_shape(draw, obj["shape"], cx, cy, half, COLORS[obj["color"]])
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def _plain_image(rng: np.random.Generator, resolution: int) -> Image.Image:
    colour = np.asarray(COLORS[str(rng.choice(list(COLORS)))], dtype=np.float32)
    array = np.broadcast_to(colour, (resolution, resolution, 3)).copy()
    array += rng.normal(0.0, 2.0, size=array.shape)  # near-empty: a faint sensor-like noise
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _chaotic_image(rng: np.random.Generator, resolution: int) -> Image.Image:
    if rng.random() < 0.5:
        noise = rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
        return Image.fromarray(noise)
    side = resolution * _SUPERSAMPLE
    image = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(25, 45))):
        shape = str(rng.choice(SHAPES))
        cx, cy = rng.uniform(0, side, 2)
        half = rng.uniform(0.03, 0.15) * side
        _draw_shape(draw, shape, cx, cy, half, tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def copy_bytes(png: bytes, rng: np.random.Generator) -> tuple[bytes, dict[str, Any]]:
    """The stored bytes of a copy of ``png`` and how it was stored (``{"encoding": ...}``), drawn from ``rng``.

    ``identical``: the same bytes; ``reencoded``: the same pixels written again (another compress level and a
    text chunk, so the bytes differ); ``jpeg``: a JPEG round trip at :data:`JPEG_QUALITY`, stored back as PNG.
    """
    encoding = str(rng.choice(list(COPY_ENCODINGS), p=list(COPY_ENCODINGS.values())))
    if encoding == "identical":
        return png, {"encoding": encoding}
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if encoding == "reencoded":
        return png_bytes(image, compress_level=1, text={"Comment": "re-encoded copy"}), {"encoding": encoding}
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return png_bytes(Image.open(buffer).convert("RGB")), {"encoding": encoding, "jpeg_quality": quality}


# ----------------------------------------------------------------------------- the plan


def defect_plan(cfg: ShapesConfig) -> np.ndarray:
    """The defect kind of every pool index (exactly ``round(share * num_pool)`` of each kind)."""
    return generated.defect_plan(cfg.num_pool, cfg.seed, cfg.defects, DEFECT_KINDS)


def _duplicate_sources(cfg: ShapesConfig, kinds: np.ndarray) -> dict[int, int]:
    """Map each duplicate index to the clean index it copies; a few sources get several copies."""
    dups = np.flatnonzero(kinds == "duplicate")
    clean = np.flatnonzero(kinds == CLEAN)
    if len(dups) == 0 or len(clean) == 0:
        return {}
    rng = np.random.default_rng([cfg.seed, 11])
    n_sources = max(1, len(dups) // 4)  # groups of ~4 copies (+ the original)
    sources = rng.choice(clean, size=min(n_sources, len(clean)), replace=False)
    return {int(d): int(sources[i % len(sources)]) for i, d in enumerate(rng.permutation(dups))}


def make_sample(cfg: ShapesConfig, split: str, index: int, kind: str, dup_source: Optional[int] = None) -> dict[str, Any]:
    """Generate one sample deterministically: ``{"__key__", "png", "txt", "json"}``."""
    rng = scene_rng(cfg.seed, split, index)
    key = sample_key(split, index)
    res = cfg.resolution
    if kind == "plain":
        scene: dict[str, Any] = {"background": None, "objects": []}
        image = _plain_image(rng, res)
        caption = str(rng.choice(PLAIN_CAPTIONS))
    elif kind == "chaotic":
        scene = {"background": None, "objects": [], "clutter": True}
        image = _chaotic_image(rng, res)
        caption = caption_of(random_scene(rng))
    elif kind == "duplicate":
        if dup_source is None:
            raise ValueError(f"shapes sample {key}: a duplicate needs its source index (dup_source); pass the plan's entry")
        # The source regenerated (shards stay independent), then stored as a crawl stores a copy.
        source = make_sample(cfg, split, dup_source, CLEAN)
        png, how = copy_bytes(source["png"], rng)
        meta = {**json.loads(source["json"]), "copy_of": source["__key__"], **how}
        return {"__key__": key, "png": png, "txt": source["txt"], "json": json.dumps(meta)}
    else:
        scene = random_scene(rng)
        image = render_scene(scene, res)
        caption = caption_of(scene)
        if kind == "mismatch":
            other = random_scene(np.random.default_rng([cfg.seed, 99, index]))
            caption = caption_of(other)
        elif kind == "degraded":
            image, _ = degrade(image, rng)
    return {"__key__": key, "png": png_bytes(image), "txt": caption, "json": json.dumps(scene)}


# ----------------------------------------------------------------------------- writing


def shapes_root(cfg: ShapesConfig, cache_dir: Optional[str] = None) -> Path:
    """The cache folder of the dataset for ``cfg`` (it may not exist yet)."""
    return generated.cache_folder("shapes", cfg.resolution, _identity(cfg), cache_dir)


def ensure_shapes(cfg: ShapesConfig, cache_dir: Optional[str] = None, workers: Optional[int] = None) -> ShapesArtifacts:
    """Materialise the dataset for ``cfg`` under the cache (once) and return where it is.

    Generation writes into a temporary folder and renames it into place, so concurrent
    processes never see a partial dataset; a second call reuses the cache.
    """
    validate_shapes_config(cfg)
    root = shapes_root(cfg, cache_dir)

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        kinds = defect_plan(cfg)
        pool_jobs = generated.shard_jobs("pool", cfg.num_pool, cfg.shard_size, tmp, kinds, _duplicate_sources(cfg, kinds))
        val_jobs = generated.shard_jobs("val", cfg.num_val, cfg.shard_size, tmp)
        log.info("generating shapes (%d pool + %d val samples, %d shards) into %s", cfg.num_pool, cfg.num_val,
                 len(pool_jobs) + len(val_jobs), root)
        generated.write_shards(pool_jobs + val_jobs, partial(make_sample, cfg), workers)
        keys = [sample_key("pool", i) for i in range(cfg.num_pool)]
        pq.write_table(pa.table({"key": keys, "defect": [str(k) for k in kinds]}), tmp / "labels.parquet")
        summary = {
            "config": asdict(cfg),
            # the JPEG copies' pixels come from this libjpeg (recorded, not fingerprinted: its encoder is stable)
            "generator": {"version": GENERATOR_VERSION, "libjpeg": features.version("jpg")},
            "pool_samples": cfg.num_pool,
            "val_samples": cfg.num_val,
            "pool_shards": len(pool_jobs),
            "val_shards": len(val_jobs),
            "defects": {kind: int((kinds == kind).sum()) for kind in (CLEAN, *DEFECT_KINDS)},
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

    return ShapesArtifacts.read(generated.materialise(root, build))
