"""Smoke test of benchmarks/overhead.py: its --quick path runs (the cheap selection part) and its report flags targets."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def _load() -> SimpleNamespace:
    return SimpleNamespace(**runpy.run_path(str(ROOT / "benchmarks" / "overhead.py")))


def test_quick_selection_part_writes_table_and_json(tmp_path):
    bench = _load()
    results = bench.main(["--quick", "--parts", "selection", "--sizes", "20000", "--data", str(tmp_path / "d"),
                          "--out", str(tmp_path / "out")])
    rows = {r["case"]: r for r in results["selection"]}
    assert set(rows) == {"read_ratings", "shift_gauss", "epoch_order"}
    assert all(r["error"] is None and r["seconds"] >= 0 and r["n"] == 20000 for r in rows.values())
    saved = json.loads((tmp_path / "out" / "overhead.json").read_text())
    assert saved["results"]["selection"] == results["selection"] and "load_start" in saved["run"]
    text = (tmp_path / "out" / "overhead.md").read_text()
    assert "shift_gauss at 20,000 ratings" in text and "Load average" in text


def test_report_marks_met_and_missed_targets():
    bench = _load()
    args = bench.parse_args(["--quick"])
    meta = {"date": "d", "machine": "m", "command": "c", "load_start": 1.0, "load_end": 1.0}
    results = {
        "meta": {"step_ms": {"plain": 100.0, "first_order": 250.0, "penalty": 150.0, "unrolled": 400.0},
                 "ratio_vs_plain": {"first_order": 2.5, "penalty": 1.5, "unrolled": 4.0}, "batch_size": 32},
        "scoring": {"samples": 10, "bare_per_s": 100, "score_per_s": 90, "ratio": 0.9},
        "selection": [{"case": "shift_gauss", "n": 30_000_000, "seconds": 3.4, "peak_mb": 1, "error": None}],
    }
    lines = bench.report(args, results, meta).splitlines()
    first_order = next(line for line in lines if "first_order" in line)
    assert "2.50x" in first_order and "MISSED" in first_order
    assert "met" in next(line for line in lines if "scoring" in line)
    assert "MISSED" in next(line for line in lines if "30,000,000" in line)


def test_report_shows_the_feature_cache_ratios_with_their_goals():
    bench = _load()
    args = bench.parse_args(["--quick", "--parts", "features"])
    meta = {"date": "d", "machine": "m", "command": "c", "load_start": 1.0, "load_end": 1.0}
    results = {"features": {
        "pool": 1000, "val": 200, "batch_size": 32, "objective": "official",
        "encode": {"bare_per_s": 100, "stage_per_s": 95, "ratio": 0.95, "bytes_per_sample": 4316},
        "step_ms": {"rater (cached)": 200.0, "plain (cached)": 100.0, "plain (online)": 150.0},
        "rater_vs_plain": 2.0, "rater_vs_plain_online": 1.33, "target_cached_vs_online": 0.67,
        "scoring": {"decode_per_s": 1000, "score_per_s": 1100, "ratio": 1.1, "samples": 1000, "read_per_s": 5000,
                    "breakdown_ms": {"cache read + collate": 1.0, "rater forward": 9.0}}}}
    text = bench.report(args, results, meta)
    rows = text.splitlines()
    assert "met" in next(r for r in rows if r.startswith("| encode stage"))
    assert "MISSED" in next(r for r in rows if "cached features (batch 32" in r)
    assert "met" in next(r for r in rows if r.startswith("| scoring from cached"))
    assert "0.67x" in next(r for r in rows if r.startswith("| target step with the cache"))
    assert "5.00x" in next(r for r in rows if r.startswith("| reading cached features alone"))
    assert "cache read + collate 1.0" in text
