"""Both dataset styles read the same samples; broken members are skipped and counted."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from lightning_alchemist.data.decode import SampleDecoder
from lightning_alchemist.data.mapstyle import ShardDataset
from lightning_alchemist.data.sample import collate_samples
from lightning_alchemist.data.shards import expand_urls, shard_stem
from lightning_alchemist.data.stream import make_stream
from lightning_alchemist.data.transforms import CenterCropResize
from lightning_alchemist.errors import DataError


def _png(seed: int, size=(40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def broken_shards(tmp_path):
    """Two shards: good samples, a corrupt image, an empty caption, a missing caption, a jpg/webp."""
    good = tmp_path / "good-000000.tar"
    with wds.TarWriter(str(good)) as sink:
        for i in range(6):
            sink.write({"__key__": f"a{i:03d}", "png": _png(i), "txt": f"caption {i}", "json": json.dumps({"i": i})})
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(buf, format="JPEG")
        sink.write({"__key__": "a_jpg", "jpg": buf.getvalue(), "txt": "a jpeg"})
    bad = tmp_path / "bad-000001.tar"
    with wds.TarWriter(str(bad)) as sink:
        sink.write({"__key__": "b000", "png": _png(10), "txt": "fine"})
        sink.write({"__key__": "b_corrupt", "png": b"\x89PNG\r\n\x1a\nthis is not a png", "txt": "broken image"})
        sink.write({"__key__": "b_empty_caption", "png": _png(11), "txt": "   "})
        sink.write({"__key__": "b_no_caption", "png": _png(12)})
        sink.write({"__key__": "b001", "png": _png(13), "txt": "fine too", "json": json.dumps({"x": 1})})
    return [str(good), str(bad)]


def _decoder():
    return SampleDecoder(CenterCropResize(16))


def test_both_styles_yield_identical_samples(broken_shards):
    mapped = ShardDataset(broken_shards, _decoder())
    from_map = {s["key"]: s for s in (mapped[i] for i in range(len(mapped))) if s is not None}
    stream_decoder = _decoder()
    from_stream = {s["key"]: s for s in make_stream(broken_shards, stream_decoder)}
    assert set(from_map) == set(from_stream) == {"a000", "a001", "a002", "a003", "a004", "a005", "a_jpg", "b000", "b001"}
    for key, sample in from_map.items():
        other = from_stream[key]
        assert torch.equal(sample["image"], other["image"])
        assert sample["caption"] == other["caption"]
        assert sample["meta"] == other["meta"]
        assert sample["shard"] == other["shard"]
    assert from_map["a003"]["meta"] == {"i": 3}
    assert from_map["a003"]["image"].shape == (3, 16, 16)
    assert from_map["a003"]["image"].min() >= -1 and from_map["a003"]["image"].max() <= 1


def test_broken_members_are_skipped_and_counted(broken_shards, caplog):
    mapped = ShardDataset(broken_shards, _decoder())
    # the index already leaves out samples without a caption; the corrupt image fails at decode
    assert mapped.index_stats.counts["no_caption"] == 2
    assert set(mapped.index_stats.keys["no_caption"]) == {"b_empty_caption", "b_no_caption"}
    assert "b_corrupt" in mapped.keys
    position = mapped.keys.index("b_corrupt")
    with caplog.at_level("WARNING"):
        assert mapped[position] is None
    assert mapped.stats.counts["corrupt_image"] == 1
    assert "b_corrupt" in caplog.text
    batch = collate_samples([mapped[i] for i in range(len(mapped))])
    assert len(batch["key"]) == len(mapped) - 1 and batch["image"].shape[0] == len(mapped) - 1

    decoder = _decoder()
    list(make_stream(broken_shards, decoder))
    assert decoder.stats.counts == {"no_caption": 2, "corrupt_image": 1}
    assert "b_corrupt" in decoder.stats.summary()


def test_truncated_shard_is_indexed_up_to_the_break(broken_shards, tmp_path):
    data = open(broken_shards[0], "rb").read()
    truncated = tmp_path / "trunc-000002.tar"
    truncated.write_bytes(data[: len(data) // 2])
    ds = ShardDataset([str(truncated)], _decoder())
    assert 0 < len(ds) < 7
    assert ds.index_stats.counts["corrupt_shard"] == 1
    # everything indexed is readable
    assert all(ds[i] is not None for i in range(len(ds)))


def test_index_is_cached_under_the_cache_root_and_reused(broken_shards, monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTNING_ALCHEMIST_CACHE", str(tmp_path / "cache"))
    import lightning_alchemist.data.index as index_mod

    ShardDataset(broken_shards, _decoder())
    for shard in broken_shards:
        assert not os.path.exists(shard + ".index.parquet")  # never beside the user's data
        assert index_mod.index_path(shard).is_file()
        assert str(index_mod.index_path(shard)).startswith(str(tmp_path / "cache" / "index"))

    def fail(*a, **k):
        raise AssertionError("the index should have come from the cache")

    monkeypatch.setattr(index_mod, "_scan", fail)
    again = ShardDataset(broken_shards, _decoder())
    assert len(again) == 10


def test_map_style_dataset_exposes_keys_in_shard_order(broken_shards):
    ds = ShardDataset(broken_shards, _decoder())
    assert ds.keys[:7] == ["a000", "a001", "a002", "a003", "a004", "a005", "a_jpg"]
    assert [s.stem for s in ds.shards] == ["good-000000", "bad-000001"]
    assert [s.num_samples for s in ds.shards] == [7, 3]
    assert ds[ds.keys.index("b001")]["key"] == "b001"


def test_key_filter_applies_to_both_styles(broken_shards):
    keep = lambda key: key.startswith("a")  # noqa: E731
    ds = ShardDataset(broken_shards, _decoder(), key_filter=keep)
    assert all(k.startswith("a") for k in ds.keys) and len(ds) == 7
    assert {s["key"] for s in make_stream(broken_shards, _decoder(), key_filter=keep)} == set(ds.keys)


def test_expand_urls_accepts_lists_globs_braces_and_folders(broken_shards, tmp_path):
    folder = str(tmp_path)
    assert expand_urls(folder) == sorted(broken_shards)
    assert expand_urls(f"{folder}/*.tar") == sorted(broken_shards)
    assert expand_urls(f"{folder}/{{good-000000,bad-000001}}.tar") == [broken_shards[0], broken_shards[1]]
    assert expand_urls(broken_shards) == broken_shards
    with pytest.raises(DataError, match="does not exist"):
        expand_urls(f"{folder}/missing-{{0..3}}.tar")
    with pytest.raises(DataError, match="no shards match"):
        expand_urls(f"{folder}/*.nothing")
    assert shard_stem("/x/y/pool-000003.tar") == "pool-000003"


def test_stream_is_split_by_worker_and_covers_each_sample_once(broken_shards):
    from torch.utils.data import DataLoader

    stream = make_stream(broken_shards, _decoder())
    loader = DataLoader(stream, batch_size=4, num_workers=2, collate_fn=collate_samples)
    keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 9


def test_corrupt_sample_does_not_stop_a_tarfile(tmp_path):
    # a member that is not a regular tar entry at all: the stream logs and goes on
    shard = tmp_path / "odd-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, payload in (("k1.png", _png(1)), ("k1.txt", b"one"), ("k2.png", _png(2)), ("k2.txt", b"two")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        tar.addfile(tarfile.TarInfo("somedir"), None)
    assert {s["key"] for s in make_stream([str(shard)], _decoder())} == {"k1", "k2"}
    assert ShardDataset([str(shard)], _decoder()).keys == ["k1", "k2"]
