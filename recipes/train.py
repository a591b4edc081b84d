"""The main recipe: rate → score → select → train → evaluate → report, in one command.

    python recipes/train.py                                   # shapes, star_tiny target, keep=0.5, shift_gauss
    python recipes/train.py data=wds data.urls=/d/{000..099}.tar keep=0.5
    python recipes/train.py keep=1.0                          # all data (no rater)
    python recipes/train.py selection=random keep=0.5         # the random baseline (no rater)
    python recipes/train.py model=flux_tiny finetune=lora data.image_size=32
    python recipes/train.py ratings=DIR/ratings               # reuse ratings (skip rater training and scoring)
    python recipes/train.py selection=DIR/selection.parquet   # train with a given selection manifest
    python recipes/train.py -m keep=0.2,0.5,1.0 selection=shift_gauss,random   # a sweep + comparison table

The rater (trained with its own proxy, ``rater.proxy``), the ratings and the selection are cached
under ``<out>/cache`` by fingerprints of their inputs and config, so a second run or a sweep reuses
them; the target trains under ``<out>/cache/train/<fingerprint>`` (``<run dir>/train`` links there), so
rerunning a killed command continues from its last checkpoint (``resume=auto``; ``resume=never`` starts
over). The evaluation and the report go to the run dir (``<out>/runs/<time>``, a ``_1`` suffix when
another job took that second, or ``<out>/multirun/<time>/<job>`` in a sweep); the report is
``<run dir>/report/`` (metrics.json, PNGs, summary.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightning_alchemist.cli import hydra_main
from lightning_alchemist.schema import validate

CONF = Path(__file__).resolve().parents[1] / "conf"

log = logging.getLogger("lightning_alchemist.train")


def train(cfg: Any) -> dict[str, Any]:
    """Run the pipeline for ``cfg``; print the metrics and where the report is; return ``metrics.json``'s content."""
    from lightning_alchemist.pipeline.report import METRIC_MEANINGS, cost_line, format_metric
    from lightning_alchemist.pipeline.run import run_pipeline

    t0 = time.time()
    report = run_pipeline(cfg, run_dir(cfg))
    if not report:  # a DDP rank other than 0: rank 0 prints the results
        return report
    folder = run_dir(cfg) / "report"
    metrics = report["metrics"]
    skipped = metrics.get("skipped") or {}
    print("\nmetrics (as in report/summary.md and metrics.json):")
    for name, value in sorted(metrics.items()):
        meaning = f"  # {METRIC_MEANINGS[name]}" if name in METRIC_MEANINGS else ""
        if value is None and name in skipped:
            print(f"  {name:<20} {skipped[name]}")
        elif value is not None and not isinstance(value, (dict, list)):
            print(f"  {name:<20} {format_metric(value)}{meaning}")
    data = report.get("data") or {}
    if "skipped" in data:  # a dataset layout: what its preparation left out, by reason
        skipped = ", ".join(f"{n} {reason}" for reason, n in data["skipped"].items()) or "nothing"
        print(f"data: {data['pool']} pool + {data['val']} validation samples; skipped while preparing: {skipped}")
    cost = cost_line(report)
    if cost:
        print(cost)
    print(f"done in {time.time() - t0:.0f} s; report: {folder} (summary.md, metrics.json, PNGs)")
    return report


def run_dir(cfg: Any) -> Path:
    """This job's folder: Hydra's run/sweep dir (under ``out``, one per job of a ``-m`` sweep), else ``out``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # not inside a Hydra job (library use, tests)
        return Path(cfg.out)


def selection_path_override(argv: list[str]) -> list[str]:
    """Map ``selection=PATH`` (a manifest file) to ``selection_path=PATH``; ``selection=NAME`` stays a config group."""
    return [f"selection_path={a[len('selection='):]}" if a.startswith("selection=") and _looks_like_path(a[len("selection="):])
            else a for a in argv]


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith(".parquet") or Path(value).is_file()


@hydra_main("config", CONF, check=validate, rewrite_argv=selection_path_override)
def main(cfg: Any) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
