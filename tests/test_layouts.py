"""Dataset layouts (data=hpdv3|laion|flux_reason|folder): exact samples, bad input counted, both styles, caching."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

import layout_fixtures as F
from helpers import compose
from lightning_alchemist.config import data_config
from lightning_alchemist.errors import ConfigError, DataError

CASES = {
    "hpdv3": (F.make_hpdv3, {}),
    "laion": (F.make_laion, {}),
    "flux_reason": (F.make_flux_reason, {}),
    "folder": (F.make_folder, {}),
    "folder_csv": (lambda root: F.make_folder(root, listed=True), {"folder": {"captions": "captions.csv"}}),
}
# A numeric metadata field each layout must put in every sample's .json (what a column heuristic reads).
META_FIELD = {"hpdv3": "win_rate", "laion": "AESTHETIC_SCORE", "flux_reason": "score_image_clarity", "folder": "aesthetic",
              "folder_csv": "aesthetic"}


def _cfg(case: str, root: Path, **extra) -> dict:
    name = "folder" if case.startswith("folder") else case
    return {"name": name, "root": str(root), "num_workers": 0, "batch_size": 4, "val_fraction": 0.2,
            "convert": {"workers": 1, "shard_size": 10}, **CASES[case][1], **extra}


def _dm(case: str, root: Path, **extra):
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule(_cfg(case, root, **extra))
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("case", list(CASES))
def test_reader_finds_exactly_the_good_samples_and_counts_bad_input(case, tmp_path, cache_dir, capsys):
    expected = CASES[case][0](tmp_path / "data")
    dm = _dm(case, tmp_path / "data")
    keys = sorted(dm.pool.keys) + sorted(dm.val.keys)
    want = expected["pool"] + expected.get("val", [])
    assert sorted(keys) == sorted(want) and len(set(keys)) == len(keys)
    if case == "hpdv3":  # the release's own split: test.json images are the validation split
        assert sorted(dm.val.keys) == expected["val"] and sorted(dm.pool.keys) == expected["pool"]
    assert dict(dm.source.prepared.skips.counts) == expected["skips"]
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"data {dm.cfg.name}:") and "skipped" in ln)
    for reason, n in expected["skips"].items():
        assert f"{n} {reason}" in line
    # Converted shards live under the cache; the user's folder gets no new shard.
    for url in dm.source.pool_urls + dm.source.val_urls:
        if case != "laion":
            assert Path(url).is_relative_to(cache_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_map_and_stream_styles_yield_the_same_samples_with_metadata(case, tmp_path, cache_dir):
    from lightning_alchemist.data.stream import make_stream

    CASES[case][0](tmp_path / "data")
    dm = _dm(case, tmp_path / "data")
    mapped = {s["key"]: s for s in (dm.pool[i] for i in range(len(dm.pool)))}
    streamed = {s["key"]: s for s in make_stream(dm.source.pool_urls, dm._decoder(), key_filter=dm.source.split.is_pool)}
    assert set(mapped) == set(streamed) == set(dm.pool.keys)
    for key, sample in mapped.items():
        other = streamed[key]
        assert sample["caption"] == other["caption"] and sample["meta"] == other["meta"]
        assert torch.equal(sample["image"], other["image"]) and sample["image"].shape == (3, 32, 32)
        # the metadata is in the sample's .json member itself, numeric: a column heuristic can rank by it
        raw = json.loads(dm.pool.raw(dm.pool.keys.index(key))["json"])
        assert isinstance(raw[META_FIELD[case]], (int, float)), raw


def test_layout_details(tmp_path, cache_dir):
    """HPDv3 preference facts per image; FLUX-Reason caption fallback; img2dataset metadata from the parquet."""
    F.make_hpdv3(tmp_path / "h")
    dm = _dm("hpdv3", tmp_path / "h")
    first = dm.pool[dm.pool.keys.index("00000000-0000-0000-0000-000000000001")]
    # uuid 1 is in pair (1,2) twice (1 preferred, then 2 preferred) and is pool[0] of the pickapic pair (a loss)
    assert first["meta"]["pairs"] == 3 and first["meta"]["wins"] == 1 and first["meta"]["model"] == "sdxl"
    assert first["caption"] == F.caption(0)

    F.make_flux_reason(tmp_path / "f")
    dm = _dm("flux_reason", tmp_path / "f")
    used = {s["key"]: s["meta"]["caption_column"] for s in (dm.pool[i] for i in range(len(dm.pool)))}
    assert used["aesthetics-part01-00000001"] == "caption_detail" and used["aesthetics-part01-00000000"] == "caption_original"
    detail = dm.pool[dm.pool.keys.index("aesthetics-part01-00000001")]
    assert detail["caption"].startswith("Step by step") and detail["meta"]["subset"] == "Aesthetics-Part01"


def test_laion_parquet_is_the_key_index(tmp_path, cache_dir):
    """A tar sample with no success row is not a sample; a success row with no sample in the tar is counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = F.make_laion(tmp_path / "l")
    path = tmp_path / "l" / "00000.parquet"
    rows = pq.read_table(path).to_pylist()
    dropped = rows.pop(0)["key"]  # in the tar, no longer in the index
    rows.append({**rows[0], "key": "000009999", "status": "success"})  # indexed, not in the tar
    pq.write_table(pa.Table.from_pylist(rows), path)
    (tmp_path / "l" / "stray.tar").write_bytes((tmp_path / "l" / "00001.tar").read_bytes())  # a tar without parquet
    dm = _dm("laion", tmp_path / "l")
    assert sorted(dm.pool.keys + dm.val.keys) == sorted(k for k in expected["pool"] if k != dropped)
    counts = dm.source.prepared.skips.counts
    assert counts["not_in_parquet"] == 1 and counts["not_in_tar"] == 1 and counts["no_parquet"] == 1


def test_flux_reason_duplicate_ids_across_files_are_skipped(tmp_path, cache_dir):
    import pyarrow.parquet as pq

    F.make_flux_reason(tmp_path / "f")
    first = next((tmp_path / "f" / "Aesthetics-Part01").glob("*.parquet"))
    table = pq.read_table(first)
    pq.write_table(table.slice(0, 3), tmp_path / "f" / "Text" / "fluxdb-text-00001-of-00001.parquet")  # ids 0-2 again
    dm = _dm("flux_reason", tmp_path / "f")
    keys = dm.pool.keys + dm.val.keys
    assert len(keys) == len(set(keys)) and dm.source.prepared.skips.counts["duplicate_key"] == 3


def test_flux_reason_caption_column_is_configurable(tmp_path, cache_dir):
    F.make_flux_reason(tmp_path / "f")
    dm = _dm("flux_reason", tmp_path / "f", flux_reason={"caption": "caption_detail", "fallback_caption": None})
    assert all(dm.pool[i]["caption"].startswith("Step by step") for i in range(len(dm.pool)))
    # only the subsets asked for
    dm = _dm("flux_reason", tmp_path / "f", flux_reason={"subsets": ["Text"]})
    assert dm.pool.keys and all(k.startswith("text-") for k in dm.pool.keys + dm.val.keys)


def test_conversion_is_cached_and_resumes_by_job(tmp_path, cache_dir, monkeypatch, capsys):
    import lightning_alchemist.data.layouts.convert as convert
    from lightning_alchemist.data.sources import resolve_source

    F.make_hpdv3(tmp_path / "h")
    cfg = data_config(_cfg("hpdv3", tmp_path / "h"))
    first = resolve_source(cfg)
    folder = first.prepared.folder
    calls = []
    original = convert.run_job
    monkeypatch.setattr(convert, "run_job", lambda *a: calls.append(a[0].name) or original(*a))
    convert._ANNOUNCED.clear()
    again = resolve_source(cfg)
    assert calls == [] and again.pool_urls == first.pool_urls
    assert "(cached by fingerprint)" in capsys.readouterr().out
    # a kill mid-way: the summary and one job's marker are missing, a temp file is left behind
    (folder / "prepared.json").unlink()
    (folder / "jobs" / "pool-00001.json").unlink()
    (folder / "pool-00001-000.tar.123.tmp").write_bytes(b"partial")
    resumed = resolve_source(cfg)
    assert calls == ["pool-00001"] and resumed.pool_urls == first.pool_urls
    assert not list(folder.glob("*.tmp"))
    assert sorted(resolve_source(cfg).prepared.samples.items()) == sorted(first.prepared.samples.items())
    # a changed source is a new conversion
    train = json.loads((tmp_path / "h" / "train.json").read_text())
    (tmp_path / "h" / "train.json").write_text(json.dumps(train[:4]))
    changed = resolve_source(cfg)
    assert changed.prepared.folder != folder and changed.prepared.samples["pool"] < first.prepared.samples["pool"]


def _prepare_in_child(cfg: dict) -> list[str]:
    from lightning_alchemist.data.sources import resolve_source

    source = resolve_source(data_config(cfg))
    return source.pool_urls + source.val_urls


def test_concurrent_preparation_converts_once(tmp_path, cache_dir):
    """Two processes (DDP ranks, sweep jobs) preparing at once: one conversion, both read the same shards."""
    F.make_folder(tmp_path / "d")
    cfg = _cfg("folder", tmp_path / "d")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        a, b = pool.map(_prepare_in_child, [cfg, cfg])
    assert a == b and a
    folder = Path(a[0]).parent
    assert not list(folder.glob("*.tmp")) and len(list((folder / "jobs").glob("*.json"))) == 3


def test_iterable_style_datamodule_reads_a_layout(tmp_path, cache_dir):
    F.make_laion(tmp_path / "l")
    dm = _dm("laion", tmp_path / "l", style="iterable")
    seen = [k for batch in dm.train_dataloader() for k in batch["key"]]
    assert seen and set(seen) <= set(dm.pool.keys)


def test_bad_layout_configs_are_one_line_errors(tmp_path, cache_dir):
    from lightning_alchemist.schema import validate

    with pytest.raises(ConfigError, match="data.root' is required for data=hpdv3"):
        validate(compose("config", ["data=hpdv3", "data.root=null"]))
    with pytest.raises(DataError, match="is not a folder"):
        validate(compose("config", ["data=flux_reason", f"data.root={tmp_path / 'nowhere'}"]))
    (tmp_path / "h").mkdir()
    with pytest.raises(DataError, match="train.json does not exist"):
        validate(compose("config", ["data=hpdv3", f"data.root={tmp_path / 'h'}"]))
    F.make_folder(tmp_path / "plain")
    with pytest.raises(DataError, match="no img2dataset shards"):
        validate(compose("config", ["data=laion", f"data.root={tmp_path / 'plain'}"]))
    # the released layouts compose with the defaults (image size of the default model)
    cfg = validate(compose("config", ["data=folder", f"data.root={tmp_path / 'plain'}"]))
    assert cfg.data.name == "folder" and cfg.data.root == str(tmp_path / "plain")


@pytest.mark.parametrize("case,style", [("folder", "map"), ("flux_reason", "iterable")])
def test_lightning_ddp_prepares_once_and_splits_a_layout(case, style, tmp_path):
    """Lightning DDP (2 CPU processes) from a cold cache: the conversion happens during the run, ranks read disjoint shares."""
    import os
    import subprocess
    import sys

    CASES[case][0](tmp_path / "data")
    cfg = {**_cfg(case, tmp_path / "data"), "style": style}
    env = {**os.environ, "LIGHTNING_ALCHEMIST_CACHE": str(tmp_path / "cold_cache"), "PYTHONWARNINGS": "ignore"}
    script = Path(__file__).parent / "scripts" / "ddp_data.py"
    proc = subprocess.run([sys.executable, str(script), json.dumps(cfg), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    pool = set(ranks[0]["pool"])
    assert pool == set(ranks[1]["pool"]) and pool
    predicted = ranks[0]["predict"] + ranks[1]["predict"]
    assert sorted(predicted) == sorted(pool)  # every pool sample scored once across ranks
    train0, train1 = set(ranks[0]["train"]), set(ranks[1]["train"])
    assert train0 and train1 and (train0 | train1) <= pool
    # disjoint, except that Lightning's DistributedSampler pads an odd-sized map-style pool with one repeat
    assert len(train0 & train1) <= (1 if style == "map" and len(pool) % 2 else 0)
    assert len(list((tmp_path / "cold_cache" / "layouts").glob(f"{cfg['name']}-*/prepared.json"))) == 1


@pytest.mark.parametrize("case", list(CASES))
def test_metadata_is_what_the_column_heuristic_reads(case, tmp_path, cache_dir):
    """The heuristic rater's `column` score (lightning_alchemist.rater.heuristics, merged separately) reads each layout's .json."""
    heuristics = pytest.importorskip("lightning_alchemist.rater.heuristics")
    CASES[case][0](tmp_path / "data")
    dm = _dm(case, tmp_path / "data")
    for i in range(len(dm.pool)):
        value, reason = heuristics.column_value(json.loads(dm.pool.raw(i)["json"]), META_FIELD[case])
        assert reason == "" and isinstance(value, float), (dm.pool.keys[i], reason)


def test_parallel_conversion_writes_what_a_serial_one_does(tmp_path, cache_dir):
    import webdataset as wds

    F.make_hpdv3(tmp_path / "h")

    def contents(workers: int) -> list[list[str]]:
        cfg = _cfg("hpdv3", tmp_path / "h", cache_dir=str(tmp_path / f"c{workers}"), convert={"workers": workers, "shard_size": 4})
        source = _dm("hpdv3", tmp_path / "h", **{k: v for k, v in cfg.items() if k in ("cache_dir", "convert")}).source
        return [[s["__key__"] for s in wds.WebDataset(u, shardshuffle=False)] for u in source.pool_urls + source.val_urls]

    serial, parallel = contents(1), contents(2)
    assert serial == parallel and len(serial) > 4
