"""Curation composed with a learned rater, at the selection level: defect shares and copies kept, no training.

    python benchmarks/curation_compose.py --ratings shapes=DIR0 --ratings shapes=DIR1 --ratings glyphs=DIR0 ...
    python benchmarks/curation_compose.py --keep 0.2 --tau 0.5,2,20 --quality auto,0.65,1.0 --ratings ...

Each ``--ratings NAME=DIR`` is one rater's ratings of the embedded dataset ``NAME``'s default pool (e.g. a
data-efficiency run's cached ``<work>/cache/ratings/<fp>/ratings``); rows are means over the given raters
(the selection seed is the rater's index). Rows: the rater's Shift-Gaussian selection alone; ``curation=dedup``
then the rater (keep of the pool, and ``keep_of=survivors``); ``curation=dbp`` as it was before its quality filter (raw complexities, no filter), and with the
filter at each ``--quality`` share (``auto``: halfway between keep and 1; ``1.0``: none) and each ``--tau``
(standardised complexities). Reported: the selection's defect share, the share of copy groups with more than one
member kept, and each kind's kept share. Embeddings: the built-in fallback. Writes
``benchmarks/results/curation_compose_selection{tag}.{md,json}``.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def rows_of(keep: float, taus: list[float], qualities: list[Optional[float]]) -> list[tuple[str, Optional[dict]]]:
    """(label, CurationConfig fields or None for the rater alone) of every compared selection."""
    rows: list[tuple[str, Optional[dict]]] = [
        ("rater alone", None),
        ("dedup + rater", {"name": "dedup", "dedup": True}),
        ("dedup + rater, keep of survivors", {"name": "dedup", "dedup": True, "keep_of": "survivors"}),
        ("dbp + rater, before (raw complexity, no filter)",
         {"name": "dbp", "dedup": True, "budgets": True, "complexity_scale": "raw", "quality_keep": 1.0}),
    ]
    for q in qualities:
        for tau in taus:
            share = "auto" if q is None else q
            rows.append((f"dbp + rater, filter {share}, tau {tau}",
                         {"name": "dbp", "dedup": True, "budgets": True, "tau": tau, "quality_keep": q}))
    return rows


def run_dataset(name: str, dirs: list[str], keep: float, rows: list[tuple[str, Optional[dict]]]) -> dict[str, Any]:
    from curation import _rows, copy_groups, datamodule, measure

    from lightning_alchemist.curation import CurationConfig, curate, pool_embeddings
    from lightning_alchemist.curation.embeddings import EmbeddingsConfig
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.strategies import ShiftGaussian

    dm = datamodule(name, 0, [])
    kinds, groups = copy_groups(dm)
    keys = list(dm.pool.keys)
    kind = np.array([kinds.get(k, "?") for k in keys], dtype=object)
    emb = pool_embeddings(dm.pool, EmbeddingsConfig())
    ratings = [Ratings.read(d) for d in dirs]
    out: dict[str, Any] = {"pool": len(keys), "pool_defect_share": round(float((kind != "clean").mean()), 4),
                           "raters": dirs, "rows": {}}
    for label, fields in rows:
        runs = []
        for seed, rt in enumerate(ratings):
            if fields is None:
                picked = ShiftGaussian().select(rt, keep, seed).keys
            else:
                picked = curate(rt, emb, CurationConfig(**fields), ShiftGaussian(), keep, seed=seed, threads=1).selection.keys
            kept_rows = _rows(keys, picked)
            m = measure(keys, kept_rows, kinds, groups)
            mask = np.zeros(len(keys), dtype=bool)
            mask[kept_rows] = True
            m["defect_share"] = float(((kind != "clean") & mask).sum() / max(int(mask.sum()), 1))
            runs.append(m)
        row = {"defect_share": round(float(np.mean([r["defect_share"] for r in runs])), 4),
               "multi": round(float(np.mean([r["multi"] for r in runs])), 4),
               "kept_share": {k: round(float(np.mean([r["kept_share"][k] for r in runs])), 4) for k in runs[0]["kept_share"]}}
        out["rows"][label] = row
        print(f"{name} keep={keep} {label:<48} defect {row['defect_share']:.3f} multi {row['multi']:.3f} "
              + " ".join(f"{k} {v:.3f}" for k, v in row["kept_share"].items()), flush=True)
    return out


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"# Curation composed with a learned rater, selection level ({res['date']})", "", f"`{command}`", "",
             f"Machine: {res['machine']}. keep={res['keep']}. Means over the given raters (one per seed). defect = the "
             "selection's defect share; multi = copy groups with more than one member kept.", ""]
    for name, ds in res["datasets"].items():
        kinds = list(next(iter(ds["rows"].values()))["kept_share"])
        lines += [f"## {name} ({ds['pool']} samples, pool defect share {ds['pool_defect_share']}, {len(ds['raters'])} raters)", "",
                  "| selection | defect | multi | " + " | ".join(f"kept {k}" for k in kinds) + " |",
                  "|---|---:|---:|" + "---:|" * len(kinds)]
        for label, row in ds["rows"].items():
            lines.append(f"| {label} | {row['defect_share']:.3f} | {row['multi']:.3f} | "
                         + " | ".join(f"{row['kept_share'][k]:.3f}" for k in kinds) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", action="append", default=[], required=True, help="NAME=DIR, one per rater (repeatable)")
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--tau", default="0.5", help="comma-separated taus of the filtered dbp rows")
    p.add_argument("--quality", default="auto,1.0", help="comma-separated quality_keep shares (auto: halfway)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    by_data: dict[str, list[str]] = {}
    for item in args.ratings:
        name, _, path = item.partition("=")
        by_data.setdefault(name, []).append(path)
    qualities = [None if q == "auto" else float(q) for q in args.quality.split(",")]
    rows = rows_of(args.keep, [float(t) for t in args.tau.split(",")], qualities)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "keep": args.keep,
                           "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
                           "datasets": {name: run_dataset(name, dirs, args.keep, rows) for name, dirs in by_data.items()}}
    command = "python benchmarks/curation_compose.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(res, command)
    (out / f"curation_compose_selection{args.tag}.md").write_text(md + "\n")
    (out / f"curation_compose_selection{args.tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(md)
    return res


if __name__ == "__main__":
    main()
