"""The run report (``<run>/report/``): metrics.json, pictures a person can look at, and a summary page.

- ``metrics.json``: the run's parameters, evaluation metrics, selection statistics (and, where the
  data has defect labels, the rater's AUC per defect kind and each kind's kept share), stage
  artifacts (with ``cached`` flags) and timings;
- ``selection_histogram.png``: the rating histogram with the kept region;
- ``rating_bands.png``: pool samples by rating percentile band (top, middle, tail);
- ``generated.png``: the target's samples for the fixed evaluation prompts;
- ``loss_curves.png`` (target) and ``rater_curves.png`` (rater training);
- with curation stages: ``curation_clusters.png`` (cluster sizes before, after dedup, kept) and
  ``curation_samples.png`` (samples of the tightest and the most varied clusters), counts per stage in metrics.json;
- ``summary.md``: all of the above on one page.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from lightning_alchemist.config import as_container

__all__ = ["BANDS", "METRIC_MEANINGS", "band_keys", "curation_report", "defect_stats", "format_metric", "plot_curves", "read_csv_metrics",
           "write_report"]

# One line of meaning per metric: shown beside each value in summary.md and on the console.
METRIC_MEANINGS: dict[str, str] = {
    "val_loss": "the target's mean per-sample loss on the clean held-out split (eval.val_batches batches, fixed draws); lower is better",
    "val_samples": "held-out samples val_loss averages over",
    "num_prompts": "evaluation prompts generated for (alignment, FID)",
    "alignment": "share of generated images whose scene (shape, colour, ...) the judge reads as the prompt's; higher is better",
    "alignment_reference": "alignment of clean renders of the same prompts: a perfect generator's score (the judge's own accuracy)",
    "alignment_ceiling": "alignment of those renders after a round trip through the model's frozen tokenizer/VAE: the best this model can reach",
    "fid_judge": "FID of generated vs real held-out images in the judge's feature space; lower is better",
    "fid_judge_reference": "fid_judge of clean renders of the prompts: the floor at this sample size (a perfect generator)",
    "fid_judge_ceiling": "fid_judge of the round-tripped renders: the best this model's tokenizer/VAE allows",
    "fid_inception": "FID in Inception-v3 features (local weights); lower is better",
    "clip_score": "CLIP image-text similarity x 100 (local weights); higher is better",
}


def format_metric(value: Any) -> str:
    """How a metric value is written on the console and in summary.md (the same digits in both)."""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)

# Rating percentile bands shown in rating_bands.png (0 = highest rating).
BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.05), (0.25, 0.30), (0.50, 0.55), (0.75, 0.80), (0.95, 1.0))


def band_keys(keys: Any, ratings: np.ndarray, bands: Sequence[tuple[float, float]] = BANDS, per_band: int = 8,
              seed: int = 0) -> dict[str, list[str]]:
    """``{"top 0-5%": [keys...], ...}``: ``per_band`` seeded picks from each rank-percentile band.

    ``keys``: a sequence or a pyarrow array (only the picked keys become Python strings).
    """
    order = np.argsort(-np.asarray(ratings, dtype=np.float64), kind="stable")
    n = len(order)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {}
    for lo, hi in bands:
        idx = order[int(lo * n): max(int(hi * n), int(lo * n) + 1)]
        pick = rng.choice(idx, size=min(per_band, len(idx)), replace=False) if len(idx) else idx
        where = "top " if lo == 0 else ("bottom " if hi >= 1 else "")
        picked = keys.take(pick).to_pylist() if hasattr(keys, "take") else [keys[i] for i in pick]
        rows[f"{where}{lo * 100:.0f}-{hi * 100:.0f}%"] = picked
    return rows


def defect_stats(keys: Sequence[str], ratings: Optional[np.ndarray], kept: Optional[set], labels: Mapping[str, str]) -> dict[str, Any]:
    """Per defect kind: how many, the kept share (if a selection), and AUC(clean rated above kind) (if ratings)."""
    from lightning_alchemist.rater.auc import defect_aucs

    kinds = [labels.get(k) for k in keys]
    out: dict[str, Any] = {}
    names = sorted({k for k in kinds if k is not None})
    for name in names:
        members = [key for key, kind in zip(keys, kinds) if kind == name]
        row: dict[str, Any] = {"n": len(members)}
        if kept is not None:
            row["kept_share"] = round(sum(1 for key in members if key in kept) / max(len(members), 1), 4)
        out[name] = row
    if ratings is not None:
        for name, res in defect_aucs(dict(zip(keys, np.asarray(ratings).tolist())), labels).items():
            if name in out and name != "clean":
                out[name]["auc_clean_above"] = round(res["auc"], 4)
    return out


def read_csv_metrics(log_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (steps, values)}`` from a Lightning CSVLogger ``metrics.csv``."""
    import csv

    path = log_dir / "metrics.csv"
    if not path.is_file():
        return {}
    series: dict[str, tuple[list, list]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step")
            for name, value in row.items():
                if name in ("step", "epoch") or value in (None, "") or step in (None, ""):
                    continue
                try:
                    xs, ys = series.setdefault(name, ([], []))
                    xs.append(float(step))
                    ys.append(float(value))
                except ValueError:
                    continue
    return {k: (np.asarray(x), np.asarray(y)) for k, (x, y) in series.items()}


def plot_curves(log_dir: Path, path: Path, names: Optional[Sequence[str]] = None, title: str = "") -> Optional[Path]:
    """One panel per metric of a CSVLogger run (``names``, or every ``*loss*``/entropy/alpha series); None if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_csv_metrics(Path(log_dir))
    chosen = [n for n in (names or sorted(series)) if n in series and len(series[n][0])]
    if names is None:
        chosen = [n for n in chosen if any(t in n for t in ("loss", "entropy", "alpha", "tau", "probe"))]
        # Lightning logs a metric per step and per epoch: show the per-step curve once.
        chosen = [n for n in chosen if not (n.endswith("_epoch") and n[: -len("_epoch")] + "_step" in series)]
    if not chosen:
        return None
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, chosen):
        x, y = series[name]
        ax.plot(x, y, marker="." if len(x) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def curation_report(folder: Path, out: Path, pool: Any = None, seed: int = 0, per_row: int = 8,
                    rows: int = 3) -> tuple[dict[str, Any], dict[str, str]]:
    """The curation stage's counts and cluster sizes (from ``folder/curation.json``), and its pictures in ``out``.

    Returns ``(section for metrics.json, {name: file})``; pictures: cluster sizes sorted by size (before, after dedup,
    kept) and, with a ``pool``, ``per_row`` samples from each of the ``rows`` tightest and most varied clusters.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = json.loads((Path(folder) / "curation.json").read_text())
    before = np.asarray(summary["sizes_before"])
    after = np.asarray(summary["sizes_after_dedup"])
    kept = np.asarray(summary["sizes_kept"])

    def stats(x: np.ndarray) -> dict[str, Any]:
        nz = x[x > 0]
        return {"clusters": int(len(nz)), "min": int(nz.min()) if len(nz) else 0,
                "median": float(np.median(nz)) if len(nz) else 0.0, "max": int(nz.max()) if len(nz) else 0}

    section = {"name": summary["name"], "counts": summary["counts"], "clusters": summary["clusters"],
               "target": summary["target"], "short": summary["short"], "mode": summary["mode"],
               "sizes": {"before": stats(before), "after_dedup": stats(after), "kept": stats(kept)}}
    files: dict[str, str] = {}
    order = np.argsort(-before, kind="stable")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = np.arange(len(order))
    ax.bar(xs, before[order], color="#cccccc", label="before", width=1.0)
    ax.bar(xs, after[order], color="#88aadd", label="after dedup", width=1.0)
    ax.bar(xs, kept[order], color="#224488", label="kept", width=1.0)
    ax.set_xlabel("cluster (largest first)")
    ax.set_ylabel("samples")
    ax.set_title(f"curation {summary['name']}: cluster sizes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curation_clusters.png", dpi=90)
    plt.close(fig)
    files["curation_clusters"] = "curation_clusters.png"
    prov_path = Path(folder) / "curation.parquet"
    if pool is not None and prov_path.is_file():
        import pyarrow.parquet as pq

        from lightning_alchemist.data.contact_sheet import contact_sheet

        prov = pq.read_table(prov_path, columns=["key", "cluster"])
        labels = prov.column("cluster").to_numpy()
        intra = np.asarray(summary["intra_distance"])
        big = np.flatnonzero(before >= 2)
        by_spread = big[np.argsort(intra[big], kind="stable")]
        rng = np.random.default_rng(seed)
        grid: dict[str, list[str]] = {}
        picks = [("tight", j) for j in by_spread[:rows]] + [("varied", j) for j in by_spread[::-1][:rows]]
        for kind, j in picks:
            members = np.flatnonzero(labels == j)
            chosen = np.sort(rng.choice(members, size=min(per_row, len(members)), replace=False))
            grid[f"{kind} c{j} n={before[j]} d={intra[j]:.3f}"] = prov.column("key").take(chosen).to_pylist()
        if grid:
            contact_sheet(pool, grid, per_row=per_row).save(out / "curation_samples.png")
            files["curation_samples"] = "curation_samples.png"
    return section, files


def _rater_log_dir(rater_folder: Path) -> Optional[Path]:
    runs = sorted((rater_folder / "rater_logs").glob("version_*/metrics.csv"))
    return runs[-1].parent if runs else None


def _data_summary(datamodule: Any) -> dict[str, Any]:
    """Pool and validation sizes, and what preparing a dataset layout skipped, by reason."""
    out: dict[str, Any] = {"pool": len(datamodule.pool), "val": len(datamodule.val)}
    prepared = getattr(getattr(datamodule, "source", None), "prepared", None)
    if prepared is not None:
        out["skipped"] = {str(k): int(n) for k, n in sorted(prepared.skips.counts.items())}
        out["prepared"] = str(prepared.folder)
    return out


def write_report(
    out: Path,
    v: Any,
    plan: Any,
    datamodule: Any,
    target: Any,
    metrics: Mapping[str, Any],
    ratings: Any,
    selection: Any,
    selection_path: Optional[Path],
    stages: Mapping[str, Any],
    seconds: float,
    eval_dir: Optional[Path] = None,
) -> dict[str, Any]:
    """Write the report folder from what the stages returned; returns the ``metrics.json`` content.

    ``v``: the validated config; ``ratings``: the pool's :class:`Ratings` (None when the run had no
    rating values); ``selection``: the :class:`Selection` the target trained with (None: all data), and
    ``selection_path`` the manifest it was read from.
    """
    from lightning_alchemist.data.contact_sheet import contact_sheet
    from lightning_alchemist.schema import model_name

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    table = ratings
    ratings = table.ratings if table is not None else None
    if table is not None:
        sheet = contact_sheet(datamodule.pool, band_keys(table.keys, ratings, seed=v.seed))
        sheet.save(out / "rating_bands.png")
        files["rating_bands"] = "rating_bands.png"
    kept: Optional[set] = None
    selection_meta: dict[str, Any] = {}
    if selection is not None:
        kept = set(selection.keys.to_pylist())
        selection_meta = {k: val for k, val in selection.meta.items() if k not in ("schedule",)}
        hist = Path(selection_path).parent / "selection_histogram.png" if selection_path is not None else None
        if hist is not None and hist.is_file() and table is not None:
            shutil.copyfile(hist, out / "selection_histogram.png")
            files["selection_histogram"] = "selection_histogram.png"
    defects: dict[str, Any] = {}
    # Defect labels exist only for the datasets this package generated (shapes, glyphs); a labels.parquet
    # beside a user's shards is theirs, not ours to report under that heading (the source ignores it).
    labels_path = getattr(datamodule, "labels_path", None)
    if labels_path is not None and Path(labels_path).is_file() and (kept is not None or ratings is not None):
        from lightning_alchemist.data.shapes import read_labels

        pool_keys = table.keys.to_pylist() if table is not None else list(datamodule.pool.keys)
        defects = defect_stats(pool_keys, ratings, kept, read_labels(labels_path))
    if eval_dir is not None:
        for name in sorted(Path(eval_dir).glob("*.png")):
            shutil.copyfile(name, out / name.name)
            files[name.stem] = name.name
    if plot_curves(Path(target.log_dir), out / "loss_curves.png", title=f"target {model_name(v.model)}"):
        files["loss_curves"] = "loss_curves.png"
    curation: dict[str, Any] = {}
    sel_stage = stages.get("selection")
    if sel_stage is not None and (Path(sel_stage.path) / "curation.json").is_file():
        curation, pictures = curation_report(Path(sel_stage.path), out, getattr(datamodule, "pool", None), seed=v.seed)
        files.update(pictures)
    rater = stages.get("rater")
    rater_logs = _rater_log_dir(Path(rater.path)) if rater is not None else None
    if rater_logs is not None and plot_curves(rater_logs, out / "rater_curves.png", title="rater training"):
        files["rater_curves"] = "rater_curves.png"
    report = {
        "params": {
            "data": v.data.name, "model": model_name(v.model), "finetune": str(v.finetune.mode), "selection": plan.name,
            "keep": plan.keep, "seed": v.seed, "rater_proxy": (model_name(v.rater_proxy) if v.rater_proxy is not None else f"heuristic:{v.rater.score}") if plan.rate else None,
        },
        "metrics": as_container(dict(metrics)),
        "train": {"steps": target.steps, "samples_seen": target.samples_seen, "seconds": round(target.seconds, 1),
                  "trainer_val_loss": target.val_loss,
                  "checkpoint": target.checkpoint, "log_dir": target.log_dir, "selection": as_container(target.selection_stats),
                  "features": bool(getattr(target, "features", False)), "encoders": encoders_id(target.module)},
        "selection": as_container(selection_meta),
        "data": _data_summary(datamodule),
        "defects": defects,
        "curation": curation,
        "stages": {name: {"path": str(s.path), "fingerprint": s.fingerprint, "cached": s.cached,
                          "seconds": s.seconds} for name, s in stages.items()},
        "cost": rating_cost(stages, target.seconds),
        "seconds": round(seconds, 1),
        "files": files,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    (out / "summary.md").write_text(summary_markdown(report))
    return report


def encoders_id(module: Any) -> Optional[str]:
    """The first 16 hex digits of the sha256 of the target's frozen encoders (its tokenizer or VAE and text encoder).

    The validation loss is measured in their latent space, and a tokenizer trained on first use differs from machine
    to machine: two runs' absolute losses compare only under the same id. None for a model that names no frozen parts.
    """
    from lightning_alchemist.features.identity import encoder_digest

    proxy = getattr(module, "proxy", None)
    if proxy is None or not getattr(proxy, "frozen_attrs", ()):
        return None
    return encoder_digest(proxy)[:16]


# The stages whose work exists only to rate the pool (the encode stage is left out: the target reads it too when it
# is the proxy's model, and a run without rating may build it as well).
RATING_STAGES = ("rater", "ratings", "heuristic")


def rating_cost(stages: Mapping[str, Any], target_seconds: float) -> dict[str, Any]:
    """What rating the pool cost beside what training the target cost, in wall seconds of each stage's build.

    ``rating_s`` sums the rating stages' build times (the rater stage includes the proxy's warm-up and the image
    checks' references; ``ratings`` is the scoring), read from each stage's marker, so a reused stage reports what
    producing it took. ``rating_over_target`` is ``rating_s / target_s``, the figure to weigh against the training a
    selection saves. Empty when the run rated nothing; ``None`` entries where a build time was not measured.
    """
    present = {name: stages[name].seconds for name in RATING_STAGES if name in stages}
    if not present:
        return {}
    measured = None if any(s is None for s in present.values()) else float(sum(present.values()))
    target_s = float(target_seconds) if target_seconds else None
    ratio = measured / target_s if measured is not None and target_s else None
    return {"stages_s": present, "rating_s": None if measured is None else round(measured, 1),
            "target_s": None if target_s is None else round(target_s, 1),
            "rating_over_target": None if ratio is None else round(ratio, 3)}


def cost_line(report: Mapping[str, Any]) -> Optional[str]:
    """One sentence on the rating's cost beside the target's training (None when the run rated nothing or a time is missing)."""
    cost = report.get("cost") or {}
    if cost.get("rating_over_target") is None:
        return None
    parts = ", ".join(f"{name} {_seconds(s)} s" for name, s in cost["stages_s"].items())
    return (f"Rating cost: {cost['rating_s']} s ({parts}) = {cost['rating_over_target']:.2f}x the target's training "
            f"({cost['target_s']} s); build times, also for stages reused from the cache.")


def _fmt(value: Any) -> str:
    return format_metric(value)


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def summary_markdown(report: Mapping[str, Any]) -> str:
    """One page: parameters, metrics, defects, stages, pictures."""
    p = report["params"]
    lines = [f"# Run report: {p['data']}, {p['model']} ({p['finetune']}), {p['selection']} keep={p['keep']}", ""]
    lines += ["## Metrics", "", "| metric | value | meaning |", "|---|---:|---|"]
    skipped = report["metrics"].get("skipped") or {}
    lines += [f"| {k} | {_fmt(v) if v is not None else str(skipped.get(k, 'n/a'))} | {METRIC_MEANINGS.get(k, '')} |"
              for k, v in sorted(report["metrics"].items()) if not isinstance(v, (dict, list))]
    if report.get("defects"):
        lines += ["", "## Defect kinds (labels of the generated dataset; evaluation only)", "",
                  "| kind | n | kept share | AUC(clean rated above) |", "|---|---:|---:|---:|"]
        for kind, row in sorted(report["defects"].items()):
            lines.append(f"| {kind} | {row['n']} | {_fmt(row.get('kept_share', '-'))} | {_fmt(row.get('auc_clean_above', '-'))} |")
    cur = report.get("curation") or {}
    if cur:
        lines += ["", f"## Curation ({cur['name']}, {cur['clusters']} clusters, sampler mode {cur['mode']})", "",
                  "| stage | samples |", "|---|---:|"]
        lines += [f"| {k} | {n} |" for k, n in cur["counts"].items()]
        lines += ["", "| cluster sizes | clusters | min | median | max |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {s['clusters']} | {s['min']} | {s['median']:.1f} | {s['max']} |" for k, s in cur["sizes"].items()]
    lines += ["", "## Stages", "", "| stage | cached | build seconds | path |", "|---|---|---:|---|"]
    lines += [f"| {k} | {v['cached']} | {_seconds(v.get('seconds'))} | `{v['path']}` |" for k, v in report["stages"].items()]
    encoders = report["train"].get("encoders")
    lines += ["", f"Training: {report['train']['steps']} steps, {report['train']['samples_seen']} samples seen, "
                  f"{report['train']['seconds']} s; whole run {report['seconds']} s."
              + (f" Frozen encoders {encoders} (losses compare between runs with the same)." if encoders else ""), ""]
    cost = cost_line(report)
    if cost:
        lines += [cost, ""]
    for name, file in report["files"].items():
        lines += [f"### {name}", "", f"![{name}]({file})", ""]
    return "\n".join(lines)
