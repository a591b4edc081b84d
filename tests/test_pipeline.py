"""The whole pipeline (recipes/train.py) at toy size: every artifact, cache reuse, sweeps, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import compose, load_recipe
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.pipeline.cache import cached_stage, fingerprint

ROOT = Path(__file__).resolve().parents[1]

TOY = [
    "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "data.batch_size=8", "data.shapes.num_pool=1000", "data.shapes.num_val=200",
    "data.shapes.shard_size=500", "rater.epochs=1", "rater.warmup.steps=20", "eval.num_prompts=8", "eval.fid_real=64", "eval.val_batches=2",
]


def _recipe():
    return load_recipe("train")


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


def _count_calls(monkeypatch, owner, name, calls, tag, when=lambda *a, **k: True):
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        if when(*args, **kwargs):
            calls[tag] = calls.get(tag, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_pipeline_end_to_end_then_reuses_cached_ratings(tmp_path, monkeypatch):
    import lightning_alchemist.rater.scoring as scoring
    import lightning_alchemist.data.sources as sources
    import lightning_alchemist.rater.config as rater_config_module
    from lightning_alchemist.data.datamodule import T2IDataModule
    from lightning_alchemist.selection.manifest import Selection
    from lightning_alchemist.selection.ratings import Ratings

    train = _recipe().train
    calls: dict[str, int] = {}
    ours = lambda self, cfg=None, *a, **k: getattr(getattr(cfg, "shapes", None), "num_pool", None) == 1000  # noqa: E731
    _count_calls(monkeypatch, T2IDataModule, "__init__", calls, "datamodule", when=ours)
    _count_calls(monkeypatch, Ratings, "read", calls, "ratings")
    _count_calls(monkeypatch, Selection, "read", calls, "selection")
    _count_calls(monkeypatch, scoring, "load_rater", calls, "rater")
    _count_calls(monkeypatch, rater_config_module, "rater_config", calls, "rater_config")
    _count_calls(monkeypatch, sources, "data_identity", calls, "data_identity")
    first = train(compose("config", TOY + [f"out={tmp_path}"]))
    # One run builds its datamodule once, reads the rater, the ratings and the selection once, validates once,
    # and takes the data's identity (file stats) once.
    assert calls == {"datamodule": 1, "ratings": 1, "selection": 1, "rater": 1, "rater_config": 1, "data_identity": 1}, calls

    stages = first["stages"]
    # encode once (the rater proxy is the target: one feature cache serves rating, scoring and training)
    assert set(stages) == {"features", "rater", "ratings", "selection", "train"} and not any(s["cached"] for s in stages.values())
    assert first["train"].get("features") is True
    # the target's frozen encoders are named in the report: the ones the encode stage hashed (the proxy is the target)
    from lightning_alchemist.pipeline.cache import MARKER

    encode_key = json.loads((Path(stages["features"]["path"]) / MARKER).read_text())["key"]
    assert first["train"]["encoders"] == encode_key["encoders"][:16] and len(first["train"]["encoders"]) == 16
    rater_ckpt = Path(stages["rater"]["path"]) / "rater.ckpt"
    ratings = sorted((Path(stages["ratings"]["path"]) / "ratings").glob("*.parquet"))
    manifest = Path(stages["selection"]["path"]) / "selection.parquet"
    assert rater_ckpt.is_file() and len(ratings) == 2 and manifest.is_file()
    assert first["selection"]["num_kept"] == 500 and first["selection"]["num_rated"] == 1000
    assert first["train"]["selection"]["found"] == 500 and first["train"]["steps"] == 4

    report = tmp_path / "report"
    on_disk = json.loads((report / "metrics.json").read_text())
    assert on_disk["params"] == {"data": "shapes", "model": "star_tiny", "finetune": "full", "selection": "shift_gauss",
                                 "keep": 0.5, "seed": 0, "rater_proxy": "star_tiny"}
    for name in ("val_loss", "alignment", "fid_judge"):
        assert np.isfinite(on_disk["metrics"][name]), name
    for name in ("rating_bands", "selection_histogram", "generated", "loss_curves", "rater_curves"):
        width, height = _png(report / on_disk["files"][name])
        assert width > 50 and height > 50, name
    # shapes carries defect labels: every kind has its kept share and the rater's AUC
    assert set(on_disk["defects"]) == {"clean", "plain", "chaotic", "mismatch", "duplicate", "degraded"}
    assert all("auc_clean_above" in row for kind, row in on_disk["defects"].items() if kind != "clean")
    assert abs(sum(r["n"] * r["kept_share"] for r in on_disk["defects"].values()) - 500) < 1e-6 * 1000 + 1
    assert "![rating_bands](rating_bands.png)" in (report / "summary.md").read_text()
    # the rating's cost beside the target's training: the rater (with the proxy's warm-up) and the scoring stage
    cost = on_disk["cost"]
    assert set(cost["stages_s"]) == {"rater", "ratings"} and all(s > 0 for s in cost["stages_s"].values())
    assert cost["rating_s"] == pytest.approx(sum(cost["stages_s"].values()), abs=0.1)
    low, high = (cost["rating_s"] - 0.05) / (cost["target_s"] + 0.05), (cost["rating_s"] + 0.05) / (cost["target_s"] - 0.05)
    assert low <= cost["rating_over_target"] <= high  # the ratio of the unrounded times
    assert "Rating cost: " in (report / "summary.md").read_text()

    # A second run at another keep reuses the rater and the ratings (asserted by flag and by file times).
    times = [p.stat().st_mtime_ns for p in [rater_ckpt, *ratings]]
    second = train(compose("config", TOY + [f"out={tmp_path}", "keep=0.2"]))
    assert second["stages"]["rater"]["cached"] and second["stages"]["ratings"]["cached"] and second["stages"]["features"]["cached"]
    assert not second["stages"]["selection"]["cached"] and second["selection"]["num_kept"] == 200
    assert [p.stat().st_mtime_ns for p in [rater_ckpt, *ratings]] == times
    assert second["cost"]["stages_s"] == cost["stages_s"]  # reused stages still cost what building them took


def test_sweep_writes_one_comparison_table(tmp_path):
    """A 2-value multirun of the recipe (random baseline vs all data: no rater needed) ends with the table."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "train.py"), "-m", "keep=0.5,1.0", "selection=random", f"out={tmp_path}",
         "hydra.sweep.dir=" + str(tmp_path / "sweep"), *TOY],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "sweep" / "comparison.md").read_text().strip().splitlines()
    assert len(table) == 4, table  # header, rule, two runs
    assert table[0].startswith("| run | selection | keep |")
    rows = json.loads((tmp_path / "sweep" / "comparison.json").read_text())
    assert sorted((r["selection"], r["keep"]) for r in rows) == [("none", 1.0), ("random", 0.5)]
    assert all(np.isfinite(r["val_loss"]) for r in rows)
    assert _png(tmp_path / "sweep" / "comparison.png")[0] > 100
    # random reads no rating: the pool's keys stand in, no rater is trained
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/report/metrics.json")]
    [random_job] = [job for job in jobs if job["params"]["selection"] == "random"]
    assert set(random_job["stages"]) == {"selection", "train"}
    assert not (tmp_path / "cache" / "rater").exists()


def test_selection_for_another_dataset_is_a_one_line_error(tmp_path):
    from lightning_alchemist.selection.manifest import Selection

    path = Selection.from_keys([f"other-{i:06d}" for i in range(300)]).write(tmp_path / "other.parquet")
    cfg = compose("config", TOY + [f"out={tmp_path}", f"selection_path={path}"])
    with pytest.raises(DataError, match="0 of 300") as err:
        _recipe().train(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,error,match", [
    (["keep=0"], ConfigError, "keep"),
    (["keep=1.5"], ConfigError, "keep"),
    (["selection_path=/no/such/selection.parquet"], DataError, "selection_path"),
    (["ratings=/no/such/ratings"], DataError, "ratings"),
    (["data=wds", "data.urls='/no/such/shards-{000..009}.tar'", "data.image_size=32"], DataError, "/no/such"),
])
def test_bad_input_fails_fast_in_one_line(tmp_path, overrides, error, match):
    from lightning_alchemist.pipeline.run import plan_stages

    cfg = compose("config", [f"out={tmp_path}", *overrides])
    with pytest.raises(error, match=match) as err:
        plan_stages(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,rate,select", [
    (["keep=1.0"], False, False),
    (["keep=0.5"], True, True),
    (["keep=0.5", "selection=random"], False, True),
    (["keep=0.5", "selection=none"], False, False),
    (["keep=1.0", "selection=curriculum"], True, True),  # a curriculum reweights even at keep=1
    (["keep=0.5", "rater=heuristic", "selection=middle"], True, True),
])
def test_plan_runs_only_the_stages_a_config_needs(tmp_path, overrides, rate, select):
    from lightning_alchemist.pipeline.run import plan_stages

    plan = plan_stages(compose("config", [f"out={tmp_path}", *overrides]))
    assert (plan.rate, plan.select) == (rate, select)


def test_heuristic_rater_runs_the_pipeline_without_a_model(tmp_path, monkeypatch):
    """rater=heuristic: the pool is rated by compressed size (no proxy, no rater training), the middle half kept."""
    from lightning_alchemist.selection.ratings import Ratings

    toy = [o for o in TOY if not o.startswith("rater.")]
    calls: dict[str, int] = {}
    _count_calls(monkeypatch, Ratings, "read", calls, "ratings")
    first = _recipe().train(compose("config", toy + [f"out={tmp_path}", "rater=heuristic", "selection=middle"]))
    assert calls == {"ratings": 1}, calls  # the rating run's own read, handed to the selection
    assert set(first["stages"]) == {"heuristic", "selection", "train"}
    assert first["params"]["rater_proxy"] == "heuristic:compressed_size"
    assert first["selection"]["num_kept"] == 500 and first["selection"]["strategy"] == "block"
    assert first["defects"]["chaotic"]["kept_share"] < 0.2  # noise sits at the bottom of compressed-size ratings
    again = _recipe().train(compose("config", toy + [f"out={tmp_path}", "rater=heuristic", "selection=middle", "keep=0.2"]))
    assert again["stages"]["heuristic"]["cached"]


def test_cached_stage_reuses_finished_and_rebuilds_interrupted(tmp_path):
    calls = []

    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "artifact.txt").write_text("x")
        return {"n": len(calls)}

    a = cached_stage(tmp_path, "demo", {"b": 1, "a": [1, 2]}, build)
    b = cached_stage(tmp_path, "demo", {"a": [1, 2], "b": 1}, build)  # same key, other order
    assert not a.cached and b.cached and b.info == {"n": 1} and b.path == a.path and len(calls) == 1
    # a reused stage reports what building it took, read from its marker, not the time of loading it
    assert a.seconds is not None and a.seconds >= 0 and b.seconds == a.seconds
    assert cached_stage(tmp_path, "demo", {"a": [1, 3], "b": 1}, build).path != a.path

    def killed(folder: Path) -> dict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_stage(tmp_path, "demo", {"c": 1}, killed)
    again = cached_stage(tmp_path, "demo", {"c": 1}, build)  # no marker was written: built now
    assert not again.cached and (again.path / "artifact.txt").is_file()
    assert fingerprint({"x": 1}) != fingerprint({"x": 2})


def test_band_keys_pick_from_each_rating_band():
    from lightning_alchemist.pipeline.report import band_keys

    keys = [f"k{i:03d}" for i in range(100)]
    ratings = np.arange(100, dtype=float)  # k099 rated highest
    rows = band_keys(keys, ratings, bands=((0.0, 0.05), (0.95, 1.0)), per_band=3, seed=0)
    top, bottom = rows.values()
    assert list(rows) == ["top 0-5%", "bottom 95-100%"]
    assert set(top) <= {f"k{i:03d}" for i in range(95, 100)} and len(top) == 3
    assert set(bottom) <= {f"k{i:03d}" for i in range(0, 5)}


def test_selection_path_override_maps_manifest_paths_only():
    mod = _recipe()
    assert mod.selection_path_override(["selection=out/sel.parquet", "selection=random", "keep=0.5"]) == [
        "selection_path=out/sel.parquet", "selection=random", "keep=0.5"]
