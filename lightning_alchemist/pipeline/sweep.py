"""One comparison table for a sweep: every run's parameters and metrics side by side.

``python recipes/train.py -m keep=0.2,0.5,1.0 selection=shift_gauss,random`` writes, at the end of
the sweep, ``<sweep dir>/comparison.{md,json,png}`` (the PNG: the table plus each run's validation
loss curve). :func:`write_comparison` also works on any folder of finished runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.experimental.callback import Callback

__all__ = ["ComparisonTable", "collect_reports", "comparison_rows", "write_comparison"]

log = logging.getLogger(__name__)

PARAM_COLUMNS = ("selection", "keep", "model", "finetune", "seed")
METRIC_COLUMNS = ("val_loss", "fid_judge", "alignment", "fid_inception", "clip_score")


def collect_reports(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(run dir, metrics.json content)`` of every finished run under ``root`` (``*/report/metrics.json``)."""
    found = []
    for path in sorted(Path(root).glob("**/report/metrics.json")):
        try:
            found.append((path.parent.parent, json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable report %s: %s", path, err)
    return found


def comparison_rows(reports: Sequence[tuple[Path, dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: run, parameters, the metrics present in any run, samples seen, seconds."""
    metrics = [m for m in METRIC_COLUMNS if any(m in r["metrics"] for _, r in reports)]
    header = ["run", *PARAM_COLUMNS, *metrics, "samples_seen", "seconds"]
    rows = []
    for run, rep in reports:
        rows.append([run.name, *(rep["params"].get(p) for p in PARAM_COLUMNS), *(rep["metrics"].get(m) for m in metrics),
                     rep.get("train", {}).get("samples_seen"), rep.get("seconds")])
    rows.sort(key=lambda r: (str(r[1]), -(r[2] or 0)))
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_comparison(root: Path, out: Optional[Path] = None) -> Optional[Path]:
    """Write ``comparison.{md,json,png}`` for the runs under ``root``; returns the Markdown path (None if no runs)."""
    reports = collect_reports(root)
    if not reports:
        log.warning("no finished runs (report/metrics.json) under %s: no comparison table", root)
        return None
    out = Path(out or root)
    header, rows = comparison_rows(reports)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    (out / "comparison.md").write_text("\n".join(md) + "\n")
    (out / "comparison.json").write_text(json.dumps([dict(zip(header, row)) for row in rows], indent=2, default=str))
    _plot(reports, header, rows, out / "comparison.png")
    return out / "comparison.md"


def _plot(reports: Sequence[tuple[Path, dict[str, Any]]], header: list[str], rows: list[list[Any]], path: Path) -> list[str]:
    """The table and each run's validation curve in one PNG; returns the curves' legend labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_alchemist.pipeline.report import read_csv_metrics

    fig, (ax_table, ax_curve) = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(header)), 3 + 0.35 * len(rows) + 3.5),
                                             gridspec_kw={"height_ratios": [1 + 0.12 * len(rows), 1.6]})
    ax_table.axis("off")
    table = ax_table.table(cellText=[[_cell(v) for v in row] for row in rows], colLabels=header, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for run, rep in reports:
        series = read_csv_metrics(Path(rep.get("train", {}).get("log_dir", "")))
        if "val/loss" in series:
            x, y = series["val/loss"]
            p = rep["params"]
            ax_curve.plot(x, y, marker=".", label=f"{p['selection']} keep={_cell(p['keep'])} ({run.name})")
    ax_curve.set_xlabel("step")
    ax_curve.set_ylabel("val/loss (clean held-out)")
    labels = [line.get_label() for line in ax_curve.lines]
    if ax_curve.lines:
        ax_curve.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return labels


class ComparisonTable(Callback):
    """Hydra callback: the comparison table of a multirun's jobs (in the sweep dir), rewritten after every job (a
    job that crashes later does not take the table of the finished ones with it) and printed at the end.

    Jobs that failed with a one-line error are listed at the end, and the sweep exits with status 2.
    """

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        from hydra.types import RunMode

        hydra = config.get("hydra") if hasattr(config, "get") else None
        if hydra is None or hydra.mode != RunMode.MULTIRUN:
            return
        try:
            write_comparison(Path(hydra.sweep.dir))
        except Exception as err:  # a table is a convenience: never fail a job over it
            log.warning("comparison table not updated: %s", err)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        import sys

        from lightning_alchemist.cli import FAILED_JOBS

        path = write_comparison(Path(config.hydra.sweep.dir))
        if path is not None:
            print(f"\ncomparison of the sweep's runs: {path}\n{path.read_text()}", flush=True)
        if FAILED_JOBS:
            print(f"error: {len(FAILED_JOBS)} sweep job(s) failed, the comparison holds the others: " + "; ".join(FAILED_JOBS),
                  file=sys.stderr, flush=True)
            raise SystemExit(2)
