"""recipes/prepare.py: shards readable by plain webdataset, labels, contact sheet, cache reuse."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from helpers import compose

ROOT = Path(__file__).resolve().parents[1]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("prepare_recipe", ROOT / "recipes" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_writes_shards_labels_and_contact_sheet_then_reuses_the_cache(tmp_path, capsys):
    recipe = _load_recipe()
    overrides = [
        f"out={tmp_path / 'out'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.shapes.num_pool=240",
        "data.shapes.num_val=40",
        "data.shapes.shard_size=80",
        "data.shapes.resolution=32",
    ]
    summary = recipe.main.task(compose("config", overrides))
    printed = capsys.readouterr().out
    assert "pool: 240 samples in 3 shards" in printed and "defects:" in printed and "contact sheet" in printed
    root = Path(summary["root"])
    keys = [s["__key__"] for s in wds.WebDataset(str(root / "pool-{000000..000002}.tar"), shardshuffle=False, empty_check=False)]
    assert len(keys) == 240
    labels = pq.read_table(root / "labels.parquet")
    assert labels.column_names == ["key", "defect"] and labels.num_rows == 240
    sheet = Image.open(tmp_path / "out" / "contact_sheet.png")
    assert sheet.size[0] > 400 and sheet.size[1] >= 6 * 64  # a row per kind: clean + 5 defects
    assert json.loads((tmp_path / "out" / "data_summary.json").read_text())["pool_samples"] == 240

    stamp = (root / "pool-000000.tar").stat().st_mtime_ns
    recipe.main.task(compose("config", overrides))
    assert (root / "pool-000000.tar").stat().st_mtime_ns == stamp  # cached, not regenerated
