"""Evaluate ratings against known defect labels: AUC of clean vs each defect kind.

    python -m lightning_alchemist.rater.auc DIR/ratings LABELS.parquet

AUC(kind) = P(rating of a clean sample > rating of a sample of that kind) (ties count 1/2): 1.0
means every defective sample ranks below every clean one, 0.5 is chance. For evaluation only: the
rater never reads labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Mapping

import numpy as np

__all__ = ["auc", "defect_aucs"]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann–Whitney AUC of ``pos`` ranking above ``neg`` (average ranks for ties)."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def defect_aucs(ratings: Mapping[str, float], labels: Mapping[str, str], clean: str = "clean") -> dict[str, dict[str, float]]:
    """``{kind: {"auc": ..., "n": ...}}`` for each defect kind, over keys present in both maps."""
    by_kind: dict[str, list[float]] = {}
    for key, rating in ratings.items():
        kind = labels.get(key)
        if kind is not None:
            by_kind.setdefault(kind, []).append(rating)
    pos = np.asarray(by_kind.get(clean, []))
    out = {clean: {"auc": float("nan"), "n": len(pos)}}
    for kind, values in sorted(by_kind.items()):
        if kind != clean:
            out[kind] = {"auc": auc(pos, np.asarray(values)), "n": len(values)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ratings", help="the scorer's ratings folder (or one parquet file)")
    parser.add_argument("labels", help="labels.parquet with columns key, defect")
    args = parser.parse_args(argv)
    import pyarrow.parquet as pq

    from lightning_alchemist.selection.ratings import Ratings

    from lightning_alchemist.errors import AlchemistError

    try:
        r = Ratings.read(args.ratings)
    except AlchemistError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ratings = dict(zip(r.keys.to_pylist(), r.ratings.tolist()))
    t = pq.read_table(args.labels)
    labels = dict(zip(t.column("key").to_pylist(), t.column("defect").to_pylist()))
    res = defect_aucs(ratings, labels)
    for kind, v in res.items():
        print(f"{kind:>10}  n={v['n']:>6}  AUC(clean > {kind}) = {v['auc']:.3f}" if kind != "clean" else f"{kind:>10}  n={v['n']:>6}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
