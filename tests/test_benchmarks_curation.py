"""benchmarks/curation.py's metrics: copy groups kept twice, groups split across clusters, clean data lost to dedup."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_measure_counts_multi_split_and_clean_unique_dropped(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its sibling results_io
    measure = runpy.run_path(str(ROOT / "benchmarks" / "curation.py"))["measure"]
    keys = [f"k{i}" for i in range(8)]
    kinds = dict(zip(keys, ["clean", "duplicate", "clean", "duplicate", "clean", "clean", "clean", "plain"]))
    groups = {"k0": 0, "k1": 0, "k2": 1, "k3": 1}  # two groups: a source and one copy each
    kept = np.array([0, 1, 2, 4, 5])  # group 0 kept twice, group 1 once
    dropped = np.zeros(8, dtype=bool)
    dropped[[3, 4, 6]] = True  # a copy, a clean sample with a unique caption, one whose scene is elsewhere too
    clusters = np.array([0, 1, 2, 2, 0, 0, 1, 1])  # group 0 spans clusters 0 and 1
    out = measure(keys, kept, kinds, groups, dropped, clusters, unique={"k4", "k5"})
    assert out["groups"] == 2 and out["multi"] == 0.5 and out["any"] == 1.0 and out["split"] == 1
    assert out["clean_unique_dropped"] == 0.5  # k4 of {k4, k5}; k6 shares its caption, so it is not counted
    assert out["collateral_by_kind"]["clean"] == round(2 / 3, 4) and out["collateral_by_kind"]["plain"] == 0.0
