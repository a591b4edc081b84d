"""Data efficiency: the same target trained at equal compute on full data and on selections, side by side.

    python benchmarks/data_efficiency.py                 # shapes, 2 seeds, every run of the paper's comparison
    python benchmarks/data_efficiency.py --quick         # toy size, 1 seed (minutes): checks the machinery
    python benchmarks/data_efficiency.py --data "/d/{000..099}.tar" --image-size 32
    python benchmarks/data_efficiency.py --variants      # also the meta-gradient variants at shift_gauss@0.5
    python benchmarks/data_efficiency.py --runs random@0.5 shift_gauss@0.5 dedup+shift_gauss@0.5 dbp+shift_gauss@0.5
    python benchmarks/data_efficiency.py --data "$CACHE/shapes/*/pool-*.tar" --clean-val shapes   # no clean split

A run named ``CURATION+SELECTION@KEEP`` (``dedup+shift_gauss@0.5``, ``dbp+random@0.5``) runs that curation
group (``curation=dedup|dbp``) around the selection, ``CURATION:KEY=VALUE,...+SELECTION@KEEP`` with those
``curation.KEY`` overrides (``dedup:keep_of=survivors+shift_gauss@0.5``); any ``SELECTION@KEEP`` is accepted.
``--ratings SEED=DIR`` (repeatable) takes a seed's ratings from DIR (e.g. a cached ``<work>/cache/ratings/<fp>/ratings``)
instead of training its rater; ``--reuse`` reads a finished run's report instead of training it again.
``--data`` shards without ``data.val_urls`` hold a seeded ``data.val_fraction`` of the pool out as the validation split
(dirty, as the paper does): the proxy warms up on it and the image checks take their references from it.
``--clean-val NAME`` then also measures every run's target on embedded dataset NAME's clean validation split
(``val_loss_clean``), the loss a team cares about, which the dirty split's loss only approximates.

Every run goes through the real pipeline (``lightning_alchemist.pipeline.run.run_pipeline``): the rater
is trained and the pool scored once per seed (cached), each selection trains the same target for the
same number of samples seen. Reported per run (mean ± std over seeds): validation loss on the clean
held-out split, FID on judge features, alignment (shapes only), and the training compute each run
needs to reach the full-data run's final validation loss (the paper's "x times faster"). Also the
rater's AUC per defect kind and each kind's share in each selection (shapes labels). Ends with the
paper's claims, each marked holds / does not hold with the numbers. Writes
``benchmarks/results/data_efficiency.{md,json}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]

# (name, selection, keep): the paper's comparison at small scale.
RUNS: tuple[tuple[str, str, float], ...] = (
    ("full", "none", 1.0),
    ("random@0.5", "random", 0.5),
    ("random@0.2", "random", 0.2),
    ("topk@0.5", "topk", 0.5),
    ("topk@0.2", "topk", 0.2),
    ("gsample@0.5", "gsample", 0.5),
    ("shift_gauss@0.5", "shift_gauss", 0.5),
    ("shift_gauss@0.2", "shift_gauss", 0.2),
)
VARIANTS = ("penalty", "unrolled")  # first_order is the default run shift_gauss@0.5
METRICS = ("val_loss", "val_loss_clean", "fid_judge", "alignment", "defect_share", "copies_multi")


def parse_run(name: str) -> tuple[str, str, float]:
    """``(name, selection, keep)`` of a run name ``[CURATION+]SELECTION@KEEP`` (``full``: all data)."""
    if name == "full":
        return ("full", "none", 1.0)
    body, _, keep = name.partition("@")
    if not keep:
        raise SystemExit(f"--runs: '{name}' has no keep; expected [CURATION+]SELECTION@KEEP, e.g. dedup+shift_gauss@0.5")
    return (name, body.split("+")[-1], float(keep))


def run_overrides(name: str, selection: str, keep: float) -> list[str]:
    """The Hydra overrides of one run (its curation group from the ``CURATION+`` prefix, if any)."""
    out = [f"selection={selection}", f"keep={keep}"]
    if "+" in name.split("@")[0]:
        group, _, params = name.split("+")[0].partition(":")
        out.append(f"curation={group}")
        out += [f"curation.{item}" for item in params.split(",") if item]
    return out

QUICK = ["data.shapes.num_pool=2000", "data.shapes.num_val=400", "data.shapes.shard_size=500", "data.batch_size=16",
         "rater.epochs=1", "trainer.max_steps=40", "trainer.val_check_interval=10", "trainer.limit_val_batches=2",
         "eval.num_prompts=16", "eval.fid_real=200", "eval.val_batches=4"]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="toy size, one seed")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1; --quick: 0)")
    p.add_argument("--data", default=None, help="webdataset shards (path, brace pattern, glob); default: shapes")
    p.add_argument("--dataset", default=None, help="an embedded dataset instead of shapes: glyphs")
    p.add_argument("--tag", default="", help="suffix of the result files (data_efficiency<tag>.md/.json)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--runs", nargs="+", default=None,
                   help=f"runs [CURATION+]SELECTION@KEEP or full (default {[r[0] for r in RUNS]})")
    p.add_argument("--ratings", action="append", default=[], help="SEED=DIR: that seed's ratings (no rater training); repeatable")
    p.add_argument("--clean-val", default=None, metavar="NAME",
                   help="also each target's loss on embedded dataset NAME's clean validation split (with --data)")
    p.add_argument("--reuse", action="store_true", help="read a run's report from a previous invocation when it finished")
    p.add_argument("--variants", action="store_true", help="also penalty and unrolled raters at shift_gauss@0.5 (first seed)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "data_efficiency"), help="artifacts (cached between runs)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where the tables go")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_steps=600")
    return p.parse_args(argv)


def base_overrides(args: argparse.Namespace) -> list[str]:
    out = ["trainer.enable_progress_bar=false", "trainer.val_check_interval=25"]
    if args.data:
        out += ["data=wds", f"data.urls='{args.data}'", f"data.image_size={args.image_size}"]
    elif args.dataset:
        out += [f"data={args.dataset}"]
    if args.quick:
        out += QUICK
    return out + list(args.overrides)


def composed_key(cfg: Any) -> str:
    """The fingerprint of the composed config a run ran with (``out`` aside): equal overrides can compose differently
    once a default changes, and a report made under the old default must not be reused for the new one."""
    from lightning_alchemist.config import as_container
    from lightning_alchemist.pipeline.cache import fingerprint

    return fingerprint({k: v for k, v in as_container(cfg).items() if k != "out"})


def run_one(name: str, overrides: list[str], work: Path, reuse: bool = False) -> dict[str, Any]:
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.pipeline.run import run_pipeline

    cfg = check_overrides("config", [f"out={work}", *overrides], ROOT / "conf")
    key = composed_key(cfg)
    saved = work / "runs" / f"{name}.report.json"
    if reuse and saved.is_file():
        report = json.loads(saved.read_text())
        if report.get("overrides") == overrides and report.get("composed", key) == key:
            note = "" if "composed" in report else " (it predates recorded configs: a changed default would go unnoticed)"
            print(f"reused {saved}{note}", flush=True)
            return report
        print(f"not reusing {saved}: its overrides or composed config differ from this run's", flush=True)
    t0 = time.time()
    report = run_pipeline(cfg, work / "runs" / name)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["overrides"] = overrides
    report["composed"] = key
    saved.write_text(json.dumps(report, default=str))
    return report


def clean_split(name: str, overrides: list[str]) -> Any:
    """The prepared datamodule of embedded dataset ``name`` whose clean validation split :func:`clean_val_loss` reads
    (an embedded dataset's validation split does not depend on the seed, so one serves every run)."""
    from curation import datamodule

    return datamodule(name, 0, [o for o in overrides if o.startswith("data.") and not o.startswith("data.urls")])


def clean_val_loss(report: dict[str, Any], clean: Any, batches: Optional[int] = None) -> float:
    """The run's trained target on ``clean``'s validation split (:func:`clean_split`; ``eval.val_batches`` batches,
    the draws of the training's ``val/loss``): the clean loss of a run whose own validation split is dirty."""
    from lightning_alchemist.metrics.evaluate import EvalConfig, heldout_loss, load_target

    module = load_target(report["train"]["checkpoint"])
    loss, _ = heldout_loss(module, clean, EvalConfig.val_batches if batches is None else batches)
    return loss


def copy_groups_of(args: argparse.Namespace) -> Optional[tuple[list[str], dict[str, int]]]:
    """``(pool keys, key -> copy group)`` of an embedded dataset (benchmarks/curation.py's reading), else None."""
    if args.data or args.quick:
        return None
    from curation import copy_groups, datamodule

    name = args.dataset or "shapes"
    dm = datamodule(name, 0, [o for o in args.overrides if o.startswith("data.")])
    _, groups = copy_groups(dm)
    return list(dm.pool.keys), groups


def copies_multi(report: dict[str, Any], groups: dict[str, int]) -> Optional[float]:
    """Share of copy groups (≥ 2 members in the pool) with more than one member in the run's selection."""
    import pyarrow.parquet as pq

    sel = (report.get("stages") or {}).get("selection")
    if not sel or not groups:
        return None
    kept = pq.read_table(Path(sel["path"]) / "selection.parquet", columns=["key"]).column("key").to_pylist()
    sizes: dict[int, int] = {}
    for g in groups.values():
        sizes[g] = sizes.get(g, 0) + 1
    hits: dict[int, int] = {}
    for key in kept:
        g = groups.get(key)
        if g is not None:
            hits[g] = hits.get(g, 0) + 1
    real = [g for g, n in sizes.items() if n >= 2]
    return sum(hits.get(g, 0) > 1 for g in real) / len(real) if real else None


def val_curve(report: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(samples seen, val/loss) of a run's validation checks."""
    from lightning_alchemist.pipeline.report import read_csv_metrics

    series = read_csv_metrics(Path(report["train"]["log_dir"]))
    if "val/loss" not in series:
        return [], []
    steps, values = series["val/loss"]
    per_step = report["train"]["samples_seen"] / max(report["train"]["steps"], 1)
    return [float(s + 1) * per_step for s in steps], [float(v) for v in values]


def samples_to_reach(report: dict[str, Any], target: float) -> Optional[float]:
    """Samples seen at the first validation check with val/loss ≤ ``target`` (None if never)."""
    for samples, value in zip(*val_curve(report)):
        if value <= target:
            return samples
    return None


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(reports: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per run: metric means/stds over seeds, compute to reach full quality, defect shares, rater AUCs."""
    full = reports.get("full", [])
    full_final = {r["params"]["seed"]: r["metrics"]["val_loss"] for r in full}
    full_samples = {r["params"]["seed"]: r["train"]["samples_seen"] for r in full}
    rows = {}
    for name, runs in reports.items():
        row: dict[str, Any] = {"seeds": [r["params"]["seed"] for r in runs]}
        for m in METRICS:
            if m != "defect_share" and any(m in r["metrics"] for r in runs):
                row[m] = mean_std([r["metrics"].get(m) for r in runs])
        speedups = []
        for r in runs:
            seed = r["params"]["seed"]
            if seed in full_final:
                reached = samples_to_reach(r, full_final[seed])
                speedups.append(full_samples[seed] / reached if reached else None)
        row["speedup_to_full_quality"] = speedups
        for m in ("val_loss", "val_loss_clean"):
            by_seed = {r["params"]["seed"]: r["metrics"][m] for r in runs if r["metrics"].get(m) is not None}
            if by_seed:
                row[f"{m}_by_seed"] = by_seed
        defects = runs[0].get("defects") or {}
        # each kind's kept share: the mean over seeds (the selections differ per seed)
        row["kept_share"] = {k: statistics.fmean(r["defects"][k]["kept_share"] for r in runs
                                                 if "kept_share" in (r.get("defects") or {}).get(k, {}))
                             for k, v in defects.items() if "kept_share" in v}
        shares = []  # the selection's defect share, per seed
        for r in runs:
            kept = {k: v["n"] * v["kept_share"] for k, v in (r.get("defects") or {}).items() if "kept_share" in v}
            if kept and sum(kept.values()):
                shares.append(sum(x for k, x in kept.items() if k != "clean") / sum(kept.values()))
        if shares:
            row["defect_share"] = mean_std(shares)
        multi = [r["copies_multi"] for r in runs if r.get("copies_multi") is not None]
        if multi:
            row["copies_multi"] = mean_std(multi)
        row["auc_clean_above"] = {k: v["auc_clean_above"] for k, v in defects.items() if "auc_clean_above" in v}
        row["seconds"] = mean_std([r["wall_seconds"] for r in runs])
        # the rating's build seconds over the target's training seconds (both from the run's report)
        row["rating_over_target"] = mean_std([(r.get("cost") or {}).get("rating_over_target") for r in runs])
        rows[name] = row
    return rows


def claims(rows: dict[str, Any]) -> list[tuple[str, Optional[bool], str]]:
    """The paper's claims, checked on the measured means (None: a run is missing)."""

    def m(run: str, metric: str) -> Optional[float]:
        v = rows.get(run, {}).get(metric)
        return v[0] if v and v[0] == v[0] else None

    out = []

    def check(text: str, a: str, b: str, metric: str, rel: str, tol: float = 0.0) -> None:
        x, y = m(a, metric), m(b, metric)
        if x is None or y is None:
            out.append((text, None, f"{a} or {b} has no {metric}"))
            return
        holds = {"<": x < y, "<~": x <= y * (1 + tol), ">": x > y}[rel]
        out.append((text, holds, f"{metric}: {a} {x:.4g} vs {b} {y:.4g}"))

    check("Alchemist@0.5 beats full data on FID", "shift_gauss@0.5", "full", "fid_judge", "<")
    check("Alchemist@0.5 beats full data on validation loss", "shift_gauss@0.5", "full", "val_loss", "<")
    check("Alchemist@0.2 is about as good as random@0.5 (FID within 5 %)", "shift_gauss@0.2", "random@0.5", "fid_judge", "<~", 0.05)
    check("top-k@0.2 is far worse than random@0.2 (FID)", "topk@0.2", "random@0.2", "fid_judge", ">")
    check("Shift-Gsample beats Gsample (FID)", "shift_gauss@0.5", "gsample@0.5", "fid_judge", "<")
    check("Alchemist@0.5 beats random@0.5 (FID)", "shift_gauss@0.5", "random@0.5", "fid_judge", "<")
    return out


def _fmt(pair: Any) -> str:
    if isinstance(pair, tuple):
        mean, std = pair
        return "-" if mean != mean else (f"{mean:.4g} ± {std:.2g}" if std else f"{mean:.4g}")
    return str(pair)


def per_seed_lines(rows: dict[str, Any], metric: str = "val_loss") -> list[str]:
    """``metric`` per seed, and each run's difference to random@0.5 in the same seed (the selections of a seed
    share its rater and its target's initialisation, so the paired difference is the comparison that counts)."""
    field = f"{metric}_by_seed"
    seeds = sorted({s for r in rows.values() for s in r.get(field, {})})
    if not seeds:
        return []
    base = rows.get("random@0.5", {}).get(field, {})
    title = {"val_loss": "Validation loss", "val_loss_clean": "Loss on the clean validation split"}.get(metric, metric)
    lines = ["", f"{title} per seed" + (" (in brackets: minus random@0.5 of the same seed)" if base else "") + ":", "",
             "| run | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for name, row in rows.items():
        cells = []
        for s in seeds:
            v = row.get(field, {}).get(s)
            paired = f" ({v - base[s]:+.3f})" if v is not None and s in base and name != "random@0.5" else ""
            cells.append("-" if v is None else f"{v:.3f}{paired}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def encoder_lines(ids: list[str]) -> list[str]:
    """The target's frozen-encoder ids of the runs (losses are in their latent space); a warning when they differ."""
    if not ids:
        return []
    if len(ids) == 1:
        return [f"Target's frozen encoders: {ids[0]} (absolute losses compare only with runs under the same id).", ""]
    return [f"**Warning: the runs trained under {len(ids)} different frozen encoders ({', '.join(ids)}); their "
            "validation losses are in different latent spaces and do not compare.**", ""]


def markdown(rows: dict[str, Any], checks: list, meta: dict[str, Any]) -> str:
    metrics = [m for m in METRICS if any(m in r for r in rows.values())]
    lines = [f"# Data efficiency ({meta['date']}, {meta['machine']})", "", f"Command: `{meta['command']}`", "",
             f"Seeds: {meta['seeds']}. copies_multi: share of the dataset's copy groups with more than one member kept.", "",
             *encoder_lines(meta.get("encoders") or []),
             "rating / target: the rating stages' build seconds (rater with the proxy's warm-up, scoring) over the "
             "target's training seconds, from each run's report.", "",
             "| run | " + " | ".join(metrics) + " | speed-up to full quality | rating / target | seconds |",
             "|---|" + "---:|" * (len(metrics) + 3)]
    for name, row in rows.items():
        speed = ", ".join("not reached" if s is None else f"{s:.2f}x" for s in row["speedup_to_full_quality"]) or "-"
        cost = _fmt(row.get("rating_over_target", "-"))
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(m, "-")) for m in metrics)
                     + f" | {speed} | {cost} | {_fmt(row['seconds'])} |")
    lines += per_seed_lines(rows) + per_seed_lines(rows, "val_loss_clean")
    kinds = sorted({k for r in rows.values() for k in r["kept_share"]})
    if kinds:
        lines += ["", "Share of each defect kind kept by each selection, mean over seeds (the generator's labels; evaluation only):", "",
                  "| run | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for name, row in rows.items():
            if row["kept_share"]:
                lines.append(f"| {name} | " + " | ".join(f"{row['kept_share'].get(k, float('nan')):.3f}" for k in kinds) + " |")
    aucs = {name: row["auc_clean_above"] for name, row in rows.items() if row["auc_clean_above"]}
    if aucs:
        lines += ["", "Rater AUC, P(clean rated above the kind) (1 = every defect below every clean sample; "
                      "the method rates `plain` ABOVE clean: the too-easy head that Shift-Gaussian skips):", ""]
        kinds = sorted({k for a in aucs.values() for k in a})
        lines += ["| rater (run) | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        seen = set()
        for name, a in aucs.items():
            sig = tuple(sorted(a.items()))
            if sig not in seen:
                seen.add(sig)
                lines.append(f"| {name} | " + " | ".join(f"{a.get(k, float('nan')):.3f}" for k in kinds) + " |")
    lines += ["", "The paper's claims, on these runs:", ""]
    for text, holds, detail in checks:
        verdict = "n/a" if holds is None else ("holds" if holds else "does NOT hold")
        lines.append(f"- {text}: **{verdict}** ({detail})")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from lightning_alchemist.config import EMBEDDED_DATASETS

    if args.clean_val is not None and args.clean_val not in EMBEDDED_DATASETS:
        raise SystemExit(f"--clean-val: got '{args.clean_val}', expected an embedded dataset: {', '.join(EMBEDDED_DATASETS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    wanted = list(RUNS) if args.runs is None else [parse_run(r) for r in args.runs]
    ratings = {int(k): v for k, v in (item.split("=", 1) for item in args.ratings)}
    if args.variants:
        wanted += [(f"shift_gauss@0.5[{v}]", "shift_gauss", 0.5) for v in VARIANTS]
    work = Path(args.work)
    base = base_overrides(args)
    reports: dict[str, list[dict[str, Any]]] = {}
    groups = copy_groups_of(args)
    clean = clean_split(args.clean_val, [f"data.image_size={args.image_size}", *args.overrides]) if args.clean_val else None
    t0 = time.time()
    for i, seed in enumerate(seeds):
        for name, selection, keep in wanted:
            if "[" in name and i > 0:  # meta-gradient variants: first seed only (each trains its own rater)
                continue
            extra = [f"rater.meta_gradient={name.split('[')[1].rstrip(']')}"] if "[" in name else []
            print(f"\n######## {name} seed={seed}", flush=True)
            if seed in ratings and selection not in ("none", "random"):
                extra.append(f"ratings='{ratings[seed]}'")
            report = run_one(f"{name}-s{seed}", [*base, *run_overrides(name, selection, keep), f"seed={seed}", *extra],
                             work, args.reuse)
            if groups is not None:
                report["copies_multi"] = copies_multi(report, groups[1])
            if clean is not None:
                report["metrics"]["val_loss_clean"] = clean_val_loss(report, clean)
            reports.setdefault(name, []).append(report)
    rows = summarise(reports)
    checks = claims(rows)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python " + " ".join(sys.argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "seconds": round(time.time() - t0), "seeds": seeds,
            "encoders": sorted({r["train"]["encoders"] for runs in reports.values() for r in runs
                                if (r.get("train") or {}).get("encoders")})}
    text = markdown(rows, checks, meta)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("data_efficiency_quick" if args.quick else "data_efficiency") + args.tag
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows, "claims": checks}, indent=2, default=str))
    print(f"written {out / stem}.md/.json ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
