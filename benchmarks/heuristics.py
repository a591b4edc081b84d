"""Heuristic baselines on the embedded datasets: how much of each defect kind a model-free filter keeps.

    python benchmarks/heuristics.py                       # shapes (and glyphs where data=glyphs exists)
    python benchmarks/heuristics.py --data shapes --keep 0.5,0.2
    python benchmarks/heuristics.py --ratings shapes=DIR/ratings   # add a learned rater's ratings as a row
    python benchmarks/heuristics.py --data shapes data.shapes.num_pool=2000   # data overrides

For each heuristic of :mod:`lightning_alchemist.rater.heuristics` and each band of its rating
ranking (top, middle, bottom; ``*`` marks the heuristic's natural band) it reports, against the
dataset's ``labels.parquet`` (evaluation only):

- AUC(clean > kind) of the band's own order: ``top`` ranks by rating, ``bottom`` by −rating,
  ``middle`` by closeness to the median rank (−|u − 0.5|); 1.0 = every sample of that kind falls
  outside the band before any clean one does, 0.5 = chance;
- at each ``keep``: the share of each kind that the band keeps (``selection=topk|middle|bottomk``),
  and the selection's defect share against the pool's;
- the same for ``shift_gauss`` at its defaults on the heuristic's ratings (what ``rater=heuristic``
  gives with the default ``selection``), and for ``random`` (kept share ≈ keep), the floor.

Ratings are cached in ``--work`` (by the heuristics' fingerprints), so a rerun only recomputes the
tables. Writes ``benchmarks/results/heuristics.{md,json}`` (``--results`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (row name, HeuristicConfig fields)
HEURISTIC_ROWS: list[tuple[str, dict[str, Any]]] = [
    ("compressed_size (png)", {"score": "compressed_size", "codec": "png"}),
    ("compressed_size (jpeg)", {"score": "compressed_size", "codec": "jpeg"}),
    ("entropy", {"score": "entropy"}),
    ("color_variance", {"score": "color_variance"}),
    ("caption_length", {"score": "caption_length"}),
]
BANDS = ("top", "middle", "bottom")


def datamodule(name: str, seed: int, overrides: list[str]) -> Any:
    """The prepared datamodule of ``data=name`` as the recipes compose it (its default config plus ``overrides``)."""
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.data.datamodule import build_datamodule

    cfg = check_overrides("config", [f"data={name}", f"seed={seed}", *overrides], ROOT / "conf")
    dm = build_datamodule(cfg.data, seed=seed)
    dm.prepare_data()
    return dm


def band_order_score(ratings: np.ndarray, band: str) -> np.ndarray:
    """A score whose descending order is the band's preference: what its AUC is computed on."""
    from lightning_alchemist.selection.draw import rank_order

    if band == "top":
        return ratings
    if band == "bottom":
        return -ratings
    ranks = np.empty(len(ratings), dtype=np.float64)
    ranks[rank_order(ratings)] = np.arange(len(ratings))
    return -np.abs(ranks / len(ratings) - 0.5)


def evaluate(keys: list[str], ratings: np.ndarray, strategy_of_band: dict[str, Any], pool_kinds: dict[str, str],
             keeps: list[float], seed: int, ranking: Optional[dict] = None) -> dict[str, Any]:
    """AUC per kind for each band, and kept shares / defect share per band and keep; ``ranking``: the ratings'
    declared ends (a learned rater's), which ``shift_gauss`` (head=auto) follows."""
    from lightning_alchemist.rater.auc import auc
    from lightning_alchemist.selection.ratings import Ratings

    kinds = sorted(set(pool_kinds.values()))
    pool_counts = {k: sum(1 for v in pool_kinds.values() if v == k) for k in kinds}
    label = np.array([pool_kinds.get(k, "?") for k in keys], dtype=object)
    table = Ratings.from_arrays(keys, ratings)
    if ranking:
        table = Ratings(table.keys, table.ratings, ranking=ranking)
    out: dict[str, Any] = {}
    for band, strategy in strategy_of_band.items():
        res: dict[str, Any] = {"auc": {}, "keep": {}}
        if band in BANDS:  # a strategy by name (shift_gauss, random) ranks by the rating: its AUC is the top band's
            score = band_order_score(ratings, band)
            clean = score[label == "clean"]
            res["auc"] = {k: round(auc(clean, score[label == k]), 4) for k in kinds if k != "clean"}
        for keep in keeps:
            sel = strategy.select(table, keep, seed)
            kept = label[sel.indices]
            # Unrated samples (undecodable) are never kept: shares are of the whole pool's kind.
            share = {k: round(float((kept == k).sum()) / pool_counts[k], 4) for k in kinds}
            res["keep"][str(keep)] = {"kept_share": share, "defect_share": round(float((kept != "clean").mean()), 4),
                                      "num_kept": int(len(kept))}
        out[band] = res
    return out


def run_dataset(name: str, keeps: list[float], work: Path, seed: int, workers: int, column: Optional[str],
                extra_ratings: Optional[str], overrides: list[str], label: str = "given ratings") -> dict[str, Any]:
    import pyarrow.parquet as pq

    from lightning_alchemist.rater.heuristics import HEURISTICS, band_strategy, run_heuristic
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.strategies import Random, ShiftGaussian

    t0 = time.perf_counter()
    dm = datamodule(name, seed, overrides)
    if dm.labels_path is None:
        raise SystemExit(f"data={name} has no labels.parquet: the heuristic benchmark needs labelled defects")
    t = pq.read_table(dm.labels_path)
    labels = dict(zip(t.column("key").to_pylist(), t.column("defect").to_pylist()))
    pool_keys = list(dm.pool.keys)
    pool_kinds = {k: labels[k] for k in pool_keys if k in labels}
    kinds = sorted(set(pool_kinds.values()))
    res: dict[str, Any] = {
        "pool": len(pool_keys), "labelled": len(pool_kinds), "prepare_s": round(time.perf_counter() - t0, 1),
        "pool_kinds": {k: sum(1 for v in pool_kinds.values() if v == k) for k in kinds},
        "pool_defect_share": round(sum(1 for v in pool_kinds.values() if v != "clean") / max(len(pool_kinds), 1), 4),
        "rows": {},
    }
    rows = list(HEURISTIC_ROWS) + ([(f"column {column}", {"score": "column", "column": column})] if column else [])
    # The three bands, and the pipeline's default strategy: what rater=heuristic gives when selection is left alone.
    bands = {**{b: band_strategy(b) for b in BANDS}, "shift_gauss": ShiftGaussian()}
    for row, fields in rows:
        folder = work / name / row.replace(" ", "_").replace("(", "").replace(")", "")
        run = run_heuristic(dm, {**fields, "workers": workers, "progress": False}, folder, overwrite=True)  # data regenerated: rescore
        r = run.ratings
        ev = evaluate(r.keys.to_pylist(), r.ratings, bands, pool_kinds, keeps, seed, ranking=r.ranking)
        res["rows"][row] = {"natural": HEURISTICS[fields["score"]].band, "skipped": run.skipped, "rated": len(r),
                            "seconds": round(run.seconds, 1), "reused": run.shards_reused > 0, "bands": ev}
        print(f"  {name}: {row}: {len(r)} rated in {run.seconds:.1f} s{' (cached)' if run.shards_reused else ''}", flush=True)
    # The floor (random) and, where given, a learned rater's ratings under its own strategy.
    res["rows"]["random"] = {"natural": "random", "bands": evaluate(pool_keys, np.zeros(len(pool_keys)), {"random": Random()},
                                                                     pool_kinds, keeps, seed)}
    if extra_ratings:
        r = Ratings.read(extra_ratings)
        ev = evaluate(r.keys.to_pylist(), r.ratings, bands, pool_kinds, keeps, seed, ranking=r.ranking)
        res["rows"][label] = {"natural": "shift_gauss", "rated": len(r), "bands": ev, "ratings": str(extra_ratings)}
    return res


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Heuristic baselines",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}; {res['date']}; seed {res['seed']}",
        "",
        "Model-free ratings (`rater=heuristic`, lightning_alchemist/rater/heuristics.py). Image statistics rate simple images",
        "high (rating = −value: flat at the top, noise at the bottom); caption length rates long captions high. Bands of the",
        "rating ranking: `top` = `selection=topk`, `middle` = `selection=middle` (Block centre 0.5), `bottom` = `selection=bottomk`;",
        "`*` marks each heuristic's natural band. AUC(clean > kind) is taken on the band's own order (middle: closeness to the",
        "median rank), so 1.0 = the band drops that kind before any clean sample. Kept share = share of the pool's samples of",
        "that kind in the selection (random keeps ≈ keep of each). `shift_gauss` (defaults n 0.2, µ 0.6, σ 0.2) on the same ratings",
        "is what `rater=heuristic` gives with the default `selection`; on a learned rater's ratings it follows their declared",
        "ends (`head=auto`: the default rating's clean top is kept, nothing skipped, σ 0.1), as the pipeline does.",
    ]
    if res.get("note"):
        lines += ["", res["note"]]
    for name, ds in res["datasets"].items():
        kinds = list(ds["pool_kinds"])
        defects = [k for k in kinds if k != "clean"]
        lines += ["", f"## {name}", "",
                  f"Pool {ds['pool']} samples; kinds {ds['pool_kinds']}; defect share {ds['pool_defect_share']:.3f}.", "",
                  "### AUC(clean > kind) per band", "",
                  "| heuristic | band | " + " | ".join(defects) + " |", "|---|---|" + "---:|" * len(defects)]
        for row, r in ds["rows"].items():
            for band, ev in r["bands"].items():
                if not ev["auc"]:
                    continue
                mark = "*" if band == r["natural"] else ""
                lines.append(f"| {row} | {band}{mark} | " + " | ".join(f"{ev['auc'][k]:.3f}" for k in defects) + " |")
        for keep in res["keeps"]:
            title = f"### keep = {keep}: kept share per kind, and the selection's defect share (pool {ds['pool_defect_share']:.3f})"
            lines += ["", title, "",
                      "| heuristic | band | " + " | ".join(kinds) + " | defect share |", "|---|---|" + "---:|" * (len(kinds) + 1)]
            for row, r in ds["rows"].items():
                for band, ev in r["bands"].items():
                    k = ev["keep"][str(keep)]
                    mark = "*" if band == r["natural"] else ""
                    lines.append(f"| {row} | {band}{mark} | " + " | ".join(f"{k['kept_share'][c]:.2f}" for c in kinds)
                                 + f" | **{k['defect_share']:.3f}** |")
        timing = ", ".join(f"{row} {r['seconds']} s" + (" (cached)" if r.get("reused") else "")
                           for row, r in ds["rows"].items() if "seconds" in r)
        lines += ["", f"Rating time (1 process, {ds['pool']} samples): {timing}."]
        skipped = {row: r["skipped"] for row, r in ds["rows"].items() if r.get("skipped")}
        if skipped:
            lines.append(f"Skipped (not rated, never kept): {skipped}.")
    return "\n".join(lines) + "\n"


def available_datasets() -> list[str]:
    return [n for n in ("shapes", "glyphs") if (ROOT / "conf" / "data" / f"{n}.yaml").is_file()]


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="comma-separated datasets (default: shapes, and glyphs where conf/data/glyphs.yaml exists)")
    parser.add_argument("--keep", default="0.5,0.2", help="comma-separated keep fractions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes over shards per heuristic")
    parser.add_argument("--column", default=None, help="also rate by this numeric .json field (a dataset's own score column)")
    parser.add_argument("--ratings", action="append", default=[],
                        help="NAME=DIR (repeatable): add these ratings (e.g. a learned rater's) for dataset NAME")
    parser.add_argument("--ratings-label", default="given ratings", help="the row name of --ratings (e.g. 'learned rater, default')")
    parser.add_argument("--note", default="", help="a line for the report, e.g. how the --ratings were made")
    parser.add_argument("--work", default=None, help="ratings cache (default: <cache>/benchmarks/heuristics)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where heuristics.{md,json} go")
    parser.add_argument("overrides", nargs="*", help="data overrides for every dataset, e.g. data.image_size=64")
    args = parser.parse_args(argv)
    from lightning_alchemist.paths import cache_root

    names = args.data.split(",") if args.data else available_datasets()
    keeps = [float(k) for k in args.keep.split(",")]
    extra = dict(item.split("=", 1) for item in args.ratings)
    work = Path(args.work) if args.work else cache_root() / "benchmarks" / "heuristics"
    res: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/heuristics.py", *(argv if argv is not None else sys.argv[1:])]),
        "note": args.note, "keeps": keeps, "seed": args.seed, "datasets": {},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    for name in names:
        print(f"{name}:", flush=True)
        res["datasets"][name] = run_dataset(name, keeps, work, args.seed, args.workers, args.column, extra.get(name), args.overrides,
                                            args.ratings_label)
    md = markdown(res)
    print(md)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heuristics.md").write_text(md)
    (out / "heuristics.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out / 'heuristics.md'} and {out / 'heuristics.json'}")
    return res


if __name__ == "__main__":
    main()
