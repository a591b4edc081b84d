"""benchmarks/data_efficiency.py's tables: means over seeds, kept shares, and the per-seed losses paired with random."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from helpers import compose

ROOT = Path(__file__).resolve().parents[1]


def _report(seed: int, val_loss: float, kept_mismatch: float, rating_over_target: float | None = None) -> dict:
    return {"params": {"seed": seed}, "metrics": {"val_loss": val_loss}, "train": {"samples_seen": 100},
            "cost": {} if rating_over_target is None else {"rating_over_target": rating_over_target},
            "wall_seconds": 1.0, "defects": {"clean": {"n": 10, "kept_share": 0.5},
                                            "mismatch": {"n": 10, "kept_share": kept_mismatch, "auc_clean_above": 0.8}}}


def test_summary_pairs_each_seed_with_random():
    bench = runpy.run_path(str(ROOT / "benchmarks" / "data_efficiency.py"))
    reports = {"random@0.5": [_report(0, 2.0, 0.5), _report(1, 2.2, 0.5)],
               "shift_gauss@0.5": [_report(0, 1.9, 0.1, 1.5), _report(1, 2.25, 0.3, 2.5)]}
    rows = bench["summarise"](reports)
    sg = rows["shift_gauss@0.5"]
    assert sg["val_loss"] == pytest.approx((2.075, 0.2474873734))
    assert sg["val_loss_by_seed"] == {0: 1.9, 1: 2.25} and sg["kept_share"]["mismatch"] == pytest.approx(0.2)
    assert sg["defect_share"][0] == pytest.approx((1 / 6 + 3 / 8) / 2)  # kept mismatch / all kept, per seed
    text = bench["markdown"](rows, [], {"date": "d", "machine": "m", "command": "c", "seeds": [0, 1]})
    assert "| shift_gauss@0.5 | 1.900 (-0.100) | 2.250 (+0.050) |" in text
    assert "| random@0.5 | 2.000 | 2.200 |" in text
    # the rating's cost beside the target's training: a mean over seeds where rated, a dash where nothing was
    assert sg["rating_over_target"] == pytest.approx((2.0, 0.7071067812))
    [sg_row] = [line for line in text.splitlines() if line.startswith("| shift_gauss@0.5 | 2.075")]
    [random_row] = [line for line in text.splitlines() if line.startswith("| random@0.5 | 2.1")]
    assert "| 2 ± 0.71 |" in sg_row and random_row.split(" | ")[-2] == "-"
    # the target's frozen encoders: named when the runs share them, a warning when they do not
    meta = {"date": "d", "machine": "m", "command": "c", "seeds": [0, 1]}
    assert "Target's frozen encoders: abc " in bench["markdown"](rows, [], {**meta, "encoders": ["abc"]})
    assert "**Warning: the runs trained under 2 different" in bench["markdown"](rows, [], {**meta, "encoders": ["abc", "def"]})


def test_reuse_needs_the_same_composed_config(tmp_path, monkeypatch):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "data_efficiency.py"))
    import lightning_alchemist.pipeline.run as run

    calls = []
    monkeypatch.setattr(run, "run_pipeline", lambda cfg, d: calls.append(cfg.selection.name) or {"metrics": {}})
    (tmp_path / "runs").mkdir()
    overrides = ["selection=shift_gauss", "keep=0.5", "seed=0"]
    first = bench["run_one"]("sg-s0", overrides, tmp_path, reuse=True)
    assert calls == ["shift_gauss"] and "composed" in first
    again = bench["run_one"]("sg-s0", overrides, tmp_path, reuse=True)
    assert calls == ["shift_gauss"] and again == first  # same overrides, same composed config: reused
    saved = tmp_path / "runs" / "sg-s0.report.json"
    other = bench["composed_key"](compose("config", [f"out={tmp_path}", *overrides, "selection.sigma=0.2"]))
    saved.write_text(json.dumps({**first, "composed": other}))  # made under another default, same overrides
    bench["run_one"]("sg-s0", overrides, tmp_path, reuse=True)
    assert calls == ["shift_gauss", "shift_gauss"]  # not reused


def test_clean_split_loss_is_summarised_and_paired_per_seed():
    """Runs whose own validation split is held out of the (dirty) pool also carry the loss on the clean split."""
    bench = runpy.run_path(str(ROOT / "benchmarks" / "data_efficiency.py"))
    reports = {"random@0.5": [_report(0, 2.0, 0.5), _report(1, 2.2, 0.5)],
               "shift_gauss@0.5": [_report(0, 2.1, 0.1), _report(1, 2.3, 0.3)]}
    for runs, clean in ((reports["random@0.5"], (1.5, 1.7)), (reports["shift_gauss@0.5"], (1.2, 1.6))):
        for r, v in zip(runs, clean):
            r["metrics"]["val_loss_clean"] = v
    rows = bench["summarise"](reports)
    assert rows["shift_gauss@0.5"]["val_loss_clean"][0] == pytest.approx(1.4)
    assert rows["shift_gauss@0.5"]["val_loss_clean_by_seed"] == {0: 1.2, 1: 1.6}
    text = bench["markdown"](rows, [], {"date": "d", "machine": "m", "command": "c", "seeds": [0, 1]})
    clean = text.split("Loss on the clean validation split per seed")[1]
    assert "| shift_gauss@0.5 | 1.200 (-0.300) | 1.600 (-0.100) |" in clean
    assert "| shift_gauss@0.5 | 2.100 (+0.100) | 2.300 (+0.100) |" in text.split("Loss on the clean")[0]
    # without the clean loss, no such table
    del rows["shift_gauss@0.5"]["val_loss_clean_by_seed"], rows["random@0.5"]["val_loss_clean_by_seed"]
    assert "clean validation split per seed" not in bench["markdown"](rows, [], {"date": "d", "machine": "m",
                                                                              "command": "c", "seeds": [0, 1]})


def test_clean_val_names_an_embedded_dataset_before_any_run():
    bench = runpy.run_path(str(ROOT / "benchmarks" / "data_efficiency.py"))
    with pytest.raises(SystemExit, match="--clean-val: got 'laion', expected an embedded dataset: shapes, glyphs"):
        bench["main"](["--data", "/nowhere/*.tar", "--clean-val", "laion"])
