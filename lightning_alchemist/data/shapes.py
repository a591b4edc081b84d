"""``shapes``: the embedded, generated text-to-image dataset with defects of known kinds.

Each clean sample shows 1–3 objects (shape, colour, size, position) on a coloured background,
captioned from a small grammar, e.g. "a small red circle above a large blue square on a white
background". The caption names discrete attributes; the drawing is continuous within what it
states (generator v3): each object's centre lies within :data:`OFFSET` of its place, its side within
its size word's range (:data:`SIZE_RANGES`), and every colour is a seeded shade within :data:`SHADE` of
the named one, under a seeded uneven light (:data:`LIGHT`), on a quarter-pixel grid; and one-object scenes,
whose captions have only 2240 variants, are a tenth of the scenes (:data:`OBJECT_COUNTS`). So no two samples
show the same pixels, and few are near-copies at the curation fallback's threshold (v2 drew a third of its
scenes from ~2240 distinct one-object pictures: 29 % of the clean samples had a pixel-identical clean twin). The
``.json`` records the drawn values (``center``, ``side``, ``rgb``, ``background_rgb``, ``light``) and
:func:`caption_is_true` checks a scene against its caption's words. A configurable share of the pool
is defective, modelled on what the Alchemist paper found at the ends of its ranking:

- ``plain``: an empty or near-empty solid background with a generic caption (the too-easy product shot;
  faint noise makes each one's pixels its own, but near-empty images are near-copies of each other by nature);
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

GENERATOR_VERSION = "3"  # 2: duplicates are genuine copies (were re-rendered near-copies); 3: continuous
# positions, sizes, shades and light, 4x supersampling with box reduction, one-object scenes rarer, mismatches redrawn
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
SIZES = {"small": 0.2, "large": 0.36}  # nominal object side (fraction of the image side): a scene without its drawn `side`
# The side an object of each size word is drawn at (uniform within; fractions of the image side): disjoint, so
# "small" and "large" stay true (the largest small object is 1.33x smaller than the smallest large one); a small
# one below 0.18 (under 6 px at 32 px) was too small for the judge to tell its shape.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.18, 0.24), "large": (0.32, 0.40)}
OFFSET = 0.05  # max shift of an object's centre from its place, per axis (fraction of the side; the judge reads places)
SHADE = 16  # max per-channel shift of a drawn colour from its named one (the name stays the nearest palette colour)
LIGHT = (15.0, 40.0)  # uneven light: a scene brightens/darkens linearly by this many levels (uniform) towards a seeded side
# Chance of a scene holding 1, 2 or 3 objects. A one-object caption has only 2240 variants and the curation
# fallback's blurred 8x8 thumbnail sees two draws of one as near-copies however they vary within its words, so
# they are rare (v2: a third, and 29 % of the clean samples had a twin).
OBJECT_COUNTS = (0.1, 0.45, 0.45)
MARGIN = 0.02  # min gap between an object's box and the image border or another object's box (fraction of the side)
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
    """A random clean scene: background colour and 1–3 objects with size, colour, shape, centre.

    The named attributes (what the caption says) are drawn first; then the drawn values within them:
    each object's ``side``, ``center`` and ``rgb`` shade, the ``background_rgb`` shade and the ``light``
    (see :data:`SIZE_RANGES`, :data:`OFFSET`, :data:`SHADE`, :data:`LIGHT`).
    """
    scene, places = _named_scene(rng)
    _draw_values(rng, scene, places)
    return scene


def random_caption(rng: np.random.Generator) -> str:
    """The caption of a random clean scene (:func:`random_scene`'s, without drawing its values)."""
    return caption_of(_named_scene(rng)[0])


_COLOR_NAMES, _SIZE_NAMES = tuple(COLORS), tuple(SIZES)
_POSITION_NAMES, _RELATION_NAMES = tuple(ONE_OBJECT_POSITIONS), tuple(RELATIONS)


def _pick(rng: np.random.Generator, names: Any) -> str:
    """A uniform choice (what ``rng.choice`` draws, without its array conversion: this runs ~10x per scene)."""
    return str(names[int(rng.integers(len(names)))])


def _named_scene(rng: np.random.Generator) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The named attributes of a random scene (what its caption says) and its objects' places."""
    background = _pick(rng, _COLOR_NAMES)
    n = _object_count(rng.random())
    palette = [c for c in COLORS if c != background]
    objects = []
    for _ in range(n):
        objects.append(
            {
                "shape": _pick(rng, SHAPES),
                "color": _pick(rng, palette),
                "size": _pick(rng, _SIZE_NAMES),
            }
        )
    scene: dict[str, Any] = {"background": background, "objects": objects}
    if n == 1:
        position = _pick(rng, _POSITION_NAMES)
        places = [ONE_OBJECT_POSITIONS[position]]
        scene["layout"] = position
    elif n == 2:
        relation = _pick(rng, _RELATION_NAMES)
        places = list(RELATIONS[relation])
        scene["layout"] = relation
    else:
        places = list(THREE_OBJECT_SLOTS)
        scene["layout"] = "row"
    return scene, places


def _object_count(u: float) -> int:
    """1, 2 or 3 objects for a uniform draw ``u`` (:data:`OBJECT_COUNTS`; cheaper than ``rng.choice(p=...)``)."""
    for n, p in enumerate(OBJECT_COUNTS, start=1):
        u -= p
        if u < 0:
            return n
    return len(OBJECT_COUNTS)


def _shade(name: str, shift: Any) -> list[int]:
    return [min(max(c + int(d), 0), 255) for c, d in zip(COLORS[name], shift)]


def _draw_values(rng: np.random.Generator, scene: dict[str, Any], places: list[tuple[float, float]]) -> None:
    """Draw each object's side, centre and shade, the background's shade and the light, within what the caption
    states (see :func:`caption_is_true`).

    Centres are redrawn (seeded) until the layout's words hold (about 1.07 draws per scene); the places themselves
    always satisfy them, so after 64 tries the objects sit at their places. The light is redrawn until every colour
    stays nearest its name at both ends of its ramp (0.8 % of scenes keep none after 16 tries: mostly orange or
    yellow ones at the edge of their shade).
    """
    objects = scene["objects"]
    for obj in objects:
        obj["side"] = round(float(rng.uniform(*SIZE_RANGES[obj["size"]])), 4)
    for _ in range(64):
        for obj, (cx, cy) in zip(objects, places):
            obj["center"] = [round(cx + float(rng.uniform(-OFFSET, OFFSET)), 4), round(cy + float(rng.uniform(-OFFSET, OFFSET)), 4)]
        if _geometry_is_true(scene):
            break
    else:
        for obj, place in zip(objects, places):
            obj["center"] = [float(place[0]), float(place[1])]
    shifts = rng.integers(-SHADE, SHADE + 1, size=(len(objects) + 1, 3)).tolist()
    for obj, shift in zip(objects, shifts):
        obj["rgb"] = _shade(obj["color"], shift)
    scene["background_rgb"] = _shade(scene["background"], shifts[-1])
    for _ in range(16):  # a strong light can push a shade of yellow towards orange at the dark end: redraw it
        scene["light"] = [round(float(rng.uniform(0.0, 360.0)), 2), round(float(rng.uniform(*LIGHT)), 2)]
        if _colours_are_true(scene):
            break
    else:
        scene["light"] = [scene["light"][0], 0.0]


_PALETTE = np.asarray(list(COLORS.values()), dtype=np.float32)  # [C, 3], in COLORS' order


def _colours_are_true(scene: dict[str, Any]) -> bool:
    """Whether every drawn colour, at both ends of the light's ramp, is nearest its named palette colour."""
    strength = float(scene.get("light", (0.0, 0.0))[1])
    objs = scene["objects"]
    rgb = np.asarray([o.get("rgb", COLORS[o["color"]]) for o in objs]
                     + [scene.get("background_rgb", COLORS[scene["background"]])], dtype=np.float32)
    names = [list(COLORS).index(o["color"]) for o in objs] + [list(COLORS).index(scene["background"])]
    ends = np.clip(rgb[None] + np.float32([[[-strength]], [[strength]]]), 0.0, 255.0)  # [2, K, 3]
    nearest = ((ends[:, :, None, :] - _PALETTE) ** 2).sum(-1).argmin(-1)  # [2, K]
    return bool((nearest == np.asarray(names)).all())


def _box(obj: dict[str, Any]) -> tuple[float, float, float, float]:
    half = float(obj.get("side", SIZES[obj["size"]])) / 2
    cx, cy = obj["center"]
    return cx - half, cy - half, cx + half, cy + half


def _geometry_is_true(scene: dict[str, Any]) -> bool:
    """Whether the objects' centres and sides fit the layout's words (see :func:`caption_is_true`)."""
    objs, layout = scene["objects"], scene.get("layout")
    boxes = [_box(o) for o in objs]
    if any(min(b) < MARGIN or max(b) > 1 - MARGIN for b in boxes):
        return False  # inside the image, with a margin
    for i in range(len(boxes)):  # no two objects touch: each is seen whole
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if not (a[2] + MARGIN <= b[0] or b[2] + MARGIN <= a[0] or a[3] + MARGIN <= b[1] or b[3] + MARGIN <= a[1]):
                return False
    if len(objs) == 1:
        (x0, y0, x1, y1), (cx, cy) = boxes[0], objs[0]["center"]
        region = {"on the left": x1 <= 0.5, "on the right": x0 >= 0.5, "at the top": y1 <= 0.5, "at the bottom": y0 >= 0.5,
                  "in the center": max(abs(cx - 0.5), abs(cy - 0.5)) <= OFFSET + 1e-9}
        if layout not in region:
            return False
        # the object lies in the named half (or the middle), and nearer its place than any other position's
        nearest = min(ONE_OBJECT_POSITIONS, key=lambda k: max(abs(cx - ONE_OBJECT_POSITIONS[k][0]), abs(cy - ONE_OBJECT_POSITIONS[k][1])))
        return region[layout] and nearest == layout
    if len(objs) == 2:
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
        relation = {"above": ay1 + MARGIN <= by0, "below": by1 + MARGIN <= ay0,
                    "to the left of": ax1 + MARGIN <= bx0, "to the right of": bx1 + MARGIN <= ax0}
        return bool(relation.get(layout, False))
    return layout == "row" and len(objs) == 3


def caption_is_true(scene: dict[str, Any], caption: str) -> bool:
    """Whether ``caption`` is the grammar's caption of ``scene`` and the scene's drawn values fit its words:
    each object's side within its size word's range; every drawn colour (the objects' and the background's,
    at both ends of the light's ramp) nearest its named palette colour; every object inside the image and
    apart from the others; and the layout's words true ("on the left": the object's box in the left half;
    "A above B": A's box wholly above B's; ...)."""
    if caption != caption_of(scene):
        return False
    for obj in scene["objects"]:
        lo, hi = SIZE_RANGES[obj["size"]]
        if not lo <= float(obj.get("side", SIZES[obj["size"]])) <= hi:
            return False
    return _colours_are_true(scene) and _geometry_is_true(scene)


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

_SUPERSAMPLE = 4  # draw at 4x and average 4x4 blocks: exact-coverage anti-aliasing on a quarter-pixel grid (PIL draws whole pixels)


def _reduce(image: Image.Image, resolution: int) -> Image.Image:
    """The supersampled drawing at ``resolution``: the mean of each block (a box filter, cheaper than LANCZOS)."""
    return image.reduce(image.size[0] // resolution)


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
    """Draw a scene at its drawn values (``center``, ``side``, ``rgb``, ``background_rgb``; a scene without
    them, e.g. written by hand, is drawn at the nominal size and the named colours). ``jitter`` shifts
    objects by up to two pixels more (the judge's robustness renders)."""
    side = resolution * _SUPERSAMPLE
    image = Image.new("RGB", (side, side), tuple(scene.get("background_rgb", COLORS[scene["background"]])))
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        cx, cy = obj["center"][0] * side, obj["center"][1] * side
        if jitter is not None:
            cx += float(jitter.integers(-2, 3)) * _SUPERSAMPLE
            cy += float(jitter.integers(-2, 3)) * _SUPERSAMPLE
        half = float(obj.get("side", SIZES[obj["size"]])) * side / 2
        _draw_shape(draw, obj["shape"], cx, cy, half, tuple(obj.get("rgb", COLORS[obj["color"]])))
    image = _reduce(image, resolution)
    if "light" in scene:
        image = _lit(image, *scene["light"])
    return image


def _light_ramp(resolution: int, angle_deg: float, strength: float) -> np.ndarray:
    """``[res, res]`` levels of uneven light: linear along ``angle_deg``, ``±strength`` at the far corners."""
    a = np.deg2rad(angle_deg)
    c, s = float(np.cos(a)), float(np.sin(a))
    axis = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 0.5
    return (axis[None, :] * c + axis[:, None] * s) * np.float32(2 * strength / max(abs(c) + abs(s), 1e-6))


def _lit(image: Image.Image, angle_deg: float, strength: float) -> Image.Image:
    array = np.asarray(image, dtype=np.int16) + np.rint(_light_ramp(image.size[0], angle_deg, strength)).astype(np.int16)[:, :, None]
    return Image.fromarray(np.clip(array, 0, 255, out=array).astype(np.uint8))


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
    return _reduce(image, resolution)


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


def _other_caption(seed: int, index: int, own: str) -> str:
    """The caption of another seeded scene, redrawn while it equals ``own`` (a mismatch must not describe its image)."""
    caption = random_caption(np.random.default_rng([seed, 99, index]))
    attempt = 0
    while caption == own:
        attempt += 1
        caption = random_caption(np.random.default_rng([seed, 99, index, attempt]))
    return caption


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
        caption = random_caption(rng)
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
            caption = _other_caption(cfg.seed, index, caption)
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
