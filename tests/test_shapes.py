"""The embedded `shapes` dataset: deterministic, defect shares as configured, readable by webdataset."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from lightning_alchemist.config import ShapesConfig
from lightning_alchemist.data.shapes import DEFECT_KINDS, GENERATOR_VERSION, caption_of, ensure_shapes, make_sample, random_scene
from lightning_alchemist.errors import ConfigError

CFG = dict(num_pool=300, num_val=50, shard_size=100, resolution=32)


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = ensure_shapes(ShapesConfig(**CFG), cache_dir=str(tmp_path / "a"))
    b = ensure_shapes(ShapesConfig(**CFG), cache_dir=str(tmp_path / "b"), workers=1)
    for ua, ub in zip(a.pool_urls + a.val_urls, b.pool_urls + b.val_urls):
        sa = list(wds.WebDataset(ua, shardshuffle=False, empty_check=False))
        sb = list(wds.WebDataset(ub, shardshuffle=False, empty_check=False))
        assert [(s["__key__"], s["png"], s["txt"], s["json"]) for s in sa] == [
            (s["__key__"], s["png"], s["txt"], s["json"]) for s in sb
        ]
    other = ensure_shapes(ShapesConfig(**{**CFG, "seed": 1}), cache_dir=str(tmp_path / "a"))
    assert other.root != a.root
    first = next(iter(wds.WebDataset(other.pool_urls[0], shardshuffle=False, empty_check=False)))
    assert first["png"] != next(iter(wds.WebDataset(a.pool_urls[0], shardshuffle=False, empty_check=False)))["png"]


def test_defect_shares_match_the_config_and_val_is_clean(tmp_path):
    defects = {"plain": 0.1, "chaotic": 0.05, "mismatch": 0.2, "duplicate": 0.1, "degraded": 0.05}
    art = ensure_shapes(ShapesConfig(**CFG, defects=defects), cache_dir=str(tmp_path))
    labels = pq.read_table(art.labels_path).to_pydict()
    counts = Counter(labels["defect"])
    assert len(labels["key"]) == 300
    for kind, share in defects.items():
        assert counts[kind] == round(share * 300)
    assert counts["clean"] == 300 - sum(round(s * 300) for s in defects.values())
    assert art.summary["defects"] == dict(counts) | {k: counts.get(k, 0) for k in DEFECT_KINDS}
    assert art.summary["generator"]["version"] == GENERATOR_VERSION and art.summary["generator"]["libjpeg"]
    val_keys = [s["__key__"] for s in wds.WebDataset(art.val_urls, shardshuffle=False, empty_check=False)]
    assert len(val_keys) == 50 and not set(val_keys) & set(labels["key"])


def test_shards_are_readable_by_plain_webdataset_and_cached(tmp_path):
    art = ensure_shapes(ShapesConfig(**CFG), cache_dir=str(tmp_path))
    samples = list(wds.WebDataset(art.pool_urls, shardshuffle=False, empty_check=False).decode("pil"))
    assert len(samples) == 300 and len(art.pool_urls) == 3
    s = samples[0]
    assert s["png"].size == (32, 32) and isinstance(s["txt"], str) and isinstance(s["json"], dict)
    mtime = (art.root / "summary.json").stat().st_mtime_ns
    again = ensure_shapes(ShapesConfig(**CFG), cache_dir=str(tmp_path))
    assert (again.root / "summary.json").stat().st_mtime_ns == mtime


def test_clean_captions_follow_the_grammar_and_json_describes_the_scene():
    import numpy as np

    scene = random_scene(np.random.default_rng(3))
    caption = caption_of(scene)
    assert caption.startswith("a ") and caption.endswith(f"on a {scene['background']} background")
    for obj in scene["objects"]:
        assert f"{obj['size']} {obj['color']} {obj['shape']}" in caption
    sample = make_sample(ShapesConfig(**CFG), "val", 5, "clean")
    meta = json.loads(sample["json"])
    assert caption_of(meta) == sample["txt"]


def test_mismatch_caption_differs_from_the_drawn_scene():
    cfg = ShapesConfig(**CFG)
    sample = make_sample(cfg, "pool", 17, "mismatch")
    assert caption_of(json.loads(sample["json"])) != sample["txt"]


@pytest.mark.parametrize(
    "bad",
    [{"defects": {"blurry": 0.1}}, {"defects": {"plain": 0.7, "chaotic": 0.4}}, {"resolution": 48}],
)
def test_bad_shapes_config_is_a_one_line_error(tmp_path, bad):
    with pytest.raises(ConfigError) as err:
        ensure_shapes(ShapesConfig(**{**CFG, **bad}), cache_dir=str(tmp_path))
    assert "\n" not in str(err.value) and "data.shapes" in str(err.value)


def _pixels(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_duplicates_are_genuine_copies_of_their_source():
    import numpy as np

    from lightning_alchemist.data.shapes import _duplicate_sources, defect_plan

    cfg = ShapesConfig(**{**CFG, "defects": {"duplicate": 0.3}})
    kinds = defect_plan(cfg)
    sources = _duplicate_sources(cfg, kinds)
    assert len(sources) == 90 and len(set(sources.values())) == 22  # groups of ~4 copies of a clean source
    seen = Counter()
    for index, source in sources.items():
        copy, original = make_sample(cfg, "pool", index, "duplicate", source), make_sample(cfg, "pool", source, "clean")
        meta = json.loads(copy["json"])
        assert meta["copy_of"] == original["__key__"] and copy["txt"] == original["txt"]
        assert caption_of(meta) == original["txt"]  # the source's scene, so the .json still describes the image
        diff = np.abs(_pixels(copy["png"]) - _pixels(original["png"]))
        seen[meta["encoding"]] += 1
        if meta["encoding"] == "identical":
            assert copy["png"] == original["png"]
        elif meta["encoding"] == "reencoded":
            assert copy["png"] != original["png"] and diff.max() == 0
        else:
            assert meta["encoding"] == "jpeg" and 90 <= meta["jpeg_quality"] <= 95
            # a high-quality JPEG rings a little at the shapes' sharp edges (measured: max <= 40, mean <= 4.3 at 32 px)
            assert 0 < diff.max() <= 48 and diff.mean() < 5.0
    assert set(seen) == {"identical", "reencoded", "jpeg"} and min(seen.values()) >= 15
    again = make_sample(cfg, "pool", next(iter(sources)), "duplicate", next(iter(sources.values())))
    first = make_sample(cfg, "pool", next(iter(sources)), "duplicate", next(iter(sources.values())))
    assert again == first  # seeded per copy
