"""The embedded `glyphs` dataset: deterministic, exact defect shares, clean validation, genuine duplicates."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image

from lightning_alchemist.config import GlyphsConfig, data_config
from lightning_alchemist.data.glyphs import (
    DEFECT_KINDS,
    PLAIN_CAPTIONS,
    caption_of,
    ensure_glyphs,
    make_sample,
    random_scene,
    read_labels,
    render_scene,
)
from lightning_alchemist.errors import ConfigError

CFG = dict(num_pool=200, num_val=40, shard_size=50, resolution=32)
DEFECTS = {"mismatch": 0.1, "noise": 0.1, "plain": 0.05, "duplicate": 0.15, "degraded": 0.05}


def _samples(urls: list[str]) -> list[dict]:
    """Raw samples (png bytes kept), with the text fields decoded."""
    out = []
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        out.append({**s, "txt": s["txt"].decode(), "json": s["json"].decode()})
    return out


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return ensure_glyphs(GlyphsConfig(**CFG, defects=DEFECTS), cache_dir=str(tmp_path_factory.mktemp("glyphs")))


def test_generation_is_deterministic_and_seeded(tmp_path, art):
    again = ensure_glyphs(GlyphsConfig(**CFG, defects=DEFECTS), cache_dir=str(tmp_path / "b"), workers=1)
    assert again.root.name == art.root.name
    for ua, ub in zip(art.pool_urls + art.val_urls, again.pool_urls + again.val_urls):
        assert [(s["__key__"], s["png"], s["txt"], s["json"]) for s in _samples([ua])] == [
            (s["__key__"], s["png"], s["txt"], s["json"]) for s in _samples([ub])
        ]
    other = ensure_glyphs(GlyphsConfig(**{**CFG, "num_pool": 50, "seed": 1}), cache_dir=str(tmp_path / "b"))
    assert other.root.name != again.root.name
    assert _samples(other.pool_urls)[0]["png"] != _samples(again.pool_urls)[0]["png"]


def test_defect_shares_are_exact_val_is_clean_and_labels_read_back(art):
    labels = read_labels(art.labels_path)
    counts = Counter(labels.values())
    assert len(labels) == 200
    for kind, share in DEFECTS.items():
        assert counts[kind] == round(share * 200)
    assert counts["clean"] == 200 - sum(round(s * 200) for s in DEFECTS.values())
    assert set(counts) == {"clean", *DEFECT_KINDS} and art.summary["defects"] == {"clean": counts["clean"], **{k: counts[k] for k in DEFECT_KINDS}}
    val = _samples(art.val_urls)
    assert len(val) == 40 and not {s["__key__"] for s in val} & set(labels)
    for s in val:  # clean: the caption is the grammar's caption of the drawn scene, and the pixels are that scene
        scene = json.loads(s["json"])
        assert s["txt"] == caption_of(scene)
        assert np.array_equal(_pixels(s["png"]), np.asarray(render_scene(scene, 32)))


def test_duplicates_are_genuine_copies_in_groups_of_two_to_five(art):
    table = pq.read_table(art.labels_path).to_pydict()
    by_key = {s["__key__"]: s for s in _samples(art.pool_urls)}
    groups: dict[int, list[str]] = {}
    for key, kind, group in zip(table["key"], table["defect"], table["dup_group"]):
        assert group >= 0 or kind != "duplicate"
        if group >= 0:
            assert kind in ("duplicate", "clean")
            groups.setdefault(group, []).append(key)
    assert sum(len(v) - 1 for v in groups.values()) == round(DEFECTS["duplicate"] * 200)
    assert art.summary["duplicate_groups"] == len(groups)
    encodings = Counter()
    for group, keys in groups.items():
        assert 2 <= len(keys) <= 5
        sources = [k for k in keys if "copy_of" not in json.loads(by_key[k]["json"])]
        assert len(sources) == 1 and dict(zip(table["key"], table["defect"]))[sources[0]] == "clean"
        for key in keys:
            meta = json.loads(by_key[key]["json"])
            assert meta["dup_group"] == group and by_key[key]["txt"] == by_key[sources[0]]["txt"]
            assert np.array_equal(_pixels(by_key[key]["png"]), _pixels(by_key[sources[0]]["png"]))
            if key != sources[0]:
                assert meta["copy_of"] == sources[0]
                encodings[meta["encoding"]] += 1
                assert (by_key[key]["png"] == by_key[sources[0]]["png"]) == (meta["encoding"] == "identical")
    assert encodings["identical"] and encodings["reencoded"]


def test_defects_look_like_their_kind(art):
    labels = read_labels(art.labels_path)
    by_key = {s["__key__"]: s for s in _samples(art.pool_urls)}
    captions = Counter(s["txt"] for s in by_key.values())
    for key, kind in labels.items():
        s, meta = by_key[key], json.loads(by_key[key]["json"])
        pixels = _pixels(s["png"]).astype(np.float32)
        if kind == "mismatch":  # a grammar caption naming other text than the drawn one, unique in the pool
            assert s["txt"] != caption_of(meta) and f'"{meta["text"]}"' not in s["txt"]
            assert captions[s["txt"]] == 1 and s["txt"].count('"') == 2 and (" on a" in s["txt"])
        elif kind == "plain":
            assert s["txt"] in PLAIN_CAPTIONS and pixels.std(axis=(0, 1)).max() < 60
        elif kind == "noise":
            assert meta["noise"] in ("gaussian", "salt_pepper", "pure")
            assert np.abs(np.diff(pixels, axis=1)).mean() > 40  # neighbouring pixels differ wildly
        elif kind == "degraded":
            clean = np.asarray(render_scene({k: v for k, v in meta.items() if k != "degraded"}, 32), dtype=np.float32)
            assert np.abs(np.diff(pixels, axis=1)).mean() < np.abs(np.diff(clean, axis=1)).mean()


def test_mismatched_captions_look_like_clean_ones():
    cfg = GlyphsConfig(**CFG)
    clean = [make_sample(cfg, "pool", i)["txt"] for i in range(300)]
    mismatched = [make_sample(cfg, "pool", i, "mismatch")["txt"] for i in range(300)]
    assert abs(np.mean([len(c.split()) for c in clean]) - np.mean([len(c.split()) for c in mismatched])) < 0.5
    assert len(set(mismatched)) == 300 and not set(mismatched) & set(clean)


def test_captions_follow_the_grammar():
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = random_scene(rng)
        caption = caption_of(scene)
        assert f'"{scene["text"]}"' in caption and f"{scene['size']} {scene['color']}" in caption
        assert scene["position"] in caption and " a orange" not in caption
    sample = make_sample(GlyphsConfig(**CFG), "val", 3)
    assert sample["txt"] == caption_of(json.loads(sample["json"]))


def test_plain_webdataset_decodes_and_the_datamodule_yields_batches(art, tmp_path):
    from lightning_alchemist.data.datamodule import build_datamodule

    decoded = list(wds.WebDataset(art.pool_urls, shardshuffle=False, empty_check=False).decode("pil"))
    assert len(decoded) == 200 and decoded[0]["png"].size == (32, 32) and isinstance(decoded[0]["json"], dict)
    dm = build_datamodule({"name": "glyphs", "image_size": 32, "batch_size": 8, "cache_dir": str(art.root.parent),
                           "glyphs": {**CFG, "defects": DEFECTS}})
    dm.prepare_data()
    dm.setup("fit")
    assert dm.source.root == art.root and dm.labels_path == art.labels_path
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32 and len(batch["caption"]) == 8
    assert len(dm.val) == 40


def test_data_identity_names_the_generator_config():
    from lightning_alchemist.data.sources import data_identity

    a = data_identity(data_config({"name": "glyphs", "glyphs": CFG}))
    b = data_identity(data_config({"name": "glyphs", "glyphs": {**CFG, "seed": 1}}))
    assert a != b and a["glyphs"]["generator"] and "freetype" in a["glyphs"]
    assert data_identity(data_config({"name": "shapes"})) != a


@pytest.mark.parametrize(
    "bad,key",
    [({"defects": {"chaotic": 0.1}}, "data.glyphs.defects"), ({"defects": {"noise": 0.7, "plain": 0.4}}, "data.glyphs.defects"),
     ({"resolution": 48}, "data.glyphs.resolution"), ({"char_share": 2.0}, "data.glyphs.char_share"),
     ({"num_pool": 0}, "data.glyphs")],
)
def test_bad_glyphs_config_is_a_one_line_error_at_config_time(bad, key):
    with pytest.raises(ConfigError) as err:
        data_config({"name": "glyphs", "glyphs": {**CFG, **bad}})
    assert "\n" not in str(err.value) and f"'{key}" in str(err.value)


def test_unknown_glyphs_key_names_it():
    with pytest.raises(ConfigError, match="data.glyphs.colour"):
        data_config({"name": "glyphs", "glyphs": {"colour": "red"}})
