"""benchmarks/signal_study.py refuses probe dumps made on other images than the ones it decodes for their keys."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dump_of_another_generator_is_refused(tmp_path):
    check = runpy.run_path(str(ROOT / "benchmarks" / "signal_study.py"))["check_dump_matches"]
    dump = tmp_path / "shapes_0.npz"
    np.savez(dump, keys=np.array(["p0"]), data_id="shapes-64px-aaaa")
    blob = dict(np.load(dump, allow_pickle=True))
    check(dump, blob, "shapes-64px-aaaa")  # the same data: accepted
    with pytest.raises(SystemExit, match="made on data shapes-64px-aaaa, but this code generates shapes-64px-bbbb"):
        check(dump, blob, "shapes-64px-bbbb")
    with pytest.raises(SystemExit, match="not recorded.*rerun benchmarks/signal_probe.py"):
        check(dump, {"keys": blob["keys"]}, "shapes-64px-aaaa")  # a dump from before the identity was recorded
