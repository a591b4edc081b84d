"""`python recipes/train.py data=<layout> data.root=DIR keep=0.5` end to end on a fixture of each released layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import layout_fixtures as F
from helpers import compose, load_recipe

TOY = [
    "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "data.batch_size=4", "data.num_workers=0", "data.val_fraction=0.25",
    "data.convert.workers=1", "rater.epochs=1", "eval.num_prompts=8", "eval.fid_real=64", "eval.val_batches=2",
    # the STAR tokenizer is fitted to each run's data: a few steps on a few images at this size
    "model.tokenizer.train_steps=4", "model.tokenizer.train_samples=16",
    "rater.proxy.tokenizer.train_steps=4", "rater.proxy.tokenizer.train_samples=16",
]
MAKERS = {"hpdv3": F.make_hpdv3, "laion": F.make_laion, "flux_reason": F.make_flux_reason, "folder": F.make_folder}


def _train(tmp_path: Path, layout: str, extra: list[str]) -> dict:
    expected = MAKERS[layout](tmp_path / "data")
    report = load_recipe("train").train(
        compose("config", TOY + [f"data={layout}", f"data.root={tmp_path / 'data'}", "keep=0.5", f"out={tmp_path / 'out'}", *extra]))
    report["expected"] = expected
    return report


@pytest.mark.parametrize("layout", list(MAKERS))
def test_train_recipe_runs_on_each_layout(layout, tmp_path, cache_dir, capsys):
    report = _train(tmp_path, layout, ["selection=random"])
    expected = report["expected"]
    data = report["data"]
    assert data["pool"] + data["val"] == len(expected["pool"]) + len(expected.get("val", []))
    assert data["skipped"] == expected["skips"]  # the run ends with what was skipped, by reason
    assert report["selection"]["num_kept"] == data["pool"] // 2 and report["train"]["steps"] == 4
    assert report["train"]["selection"]["found"] == report["selection"]["num_kept"]
    on_disk = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert on_disk["params"]["data"] == layout and on_disk["data"]["skipped"] == expected["skips"]
    last = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("data: ") and "skipped while preparing" in line for line in last[-3:])


def test_train_recipe_with_the_learned_rater_on_a_layout(tmp_path, cache_dir):
    report = _train(tmp_path, "folder", [])
    assert set(report["stages"]) == {"features", "rater", "ratings", "selection", "train"}
    assert report["selection"]["strategy"] == "shift_gauss" and report["selection"]["num_rated"] == report["data"]["pool"]
    assert report["train"]["selection"]["found"] == report["selection"]["num_kept"] > 0
