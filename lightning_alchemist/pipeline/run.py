"""The whole pipeline: rate → score → select → train → evaluate → report.

Rating, scoring and selection are cached under ``<out>/cache`` by fingerprints of their inputs and
config (:mod:`lightning_alchemist.pipeline.cache`), so a sweep over ``keep`` or ``selection`` trains
the rater and scores the pool once. Training, evaluation and the report go to the job's run dir.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.pipeline.cache import StageResult, cached_stage, plain

__all__ = ["Plan", "plan_stages", "run_pipeline"]

log = logging.getLogger(__name__)

# Strategies that read no rating values: they need only the pool's keys, not a rater.
_RATING_FREE = {"random"}


class Plan:
    """Which stages a config needs: ``rate`` (train a rater and score), ``select``, or neither (all data)."""

    def __init__(self, cfg: Any) -> None:
        from lightning_alchemist.selection.strategies import build_strategy

        self.keep = float(cfg.keep)
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"config 'keep': got {cfg.keep}, expected a fraction 0 < keep <= 1 (1.0 trains on everything)")
        self.strategy = build_strategy(cfg.selection)
        self.selection_path = Path(cfg.selection_path) if cfg.get("selection_path") else None
        self.ratings_path = Path(cfg.ratings) if cfg.get("ratings") else None
        name = self.strategy.name if self.strategy is not None else "none"
        curriculum = name == "curriculum"  # reweights every epoch, even at keep=1
        self.select = self.selection_path is None and self.strategy is not None and (self.keep < 1.0 or curriculum)
        self.rate = self.select and self.ratings_path is None and name not in _RATING_FREE
        self.mode = "weighted" if curriculum else "subset"
        # What the run trained on, for reports and sweep tables: keep=1.0 with any strategy is all data.
        self.name = "given" if self.selection_path else (name if self.select else "none")
        if self.selection_path is not None and not self.selection_path.is_file():
            raise DataError(f"config 'selection_path': no selection manifest at {self.selection_path}; "
                            "write one with recipes/select.py or drop the option")
        if self.ratings_path is not None and not self.ratings_path.exists():
            raise DataError(f"config 'ratings': no ratings folder at {self.ratings_path}; "
                            "write one with recipes/score.py or drop the option to rate here")

    def describe(self) -> str:
        if self.selection_path:
            return f"train with the given selection {self.selection_path}"
        if not self.select:
            return "train on the whole pool (no selection)"
        src = f"ratings from {self.ratings_path}" if self.ratings_path else ("no ratings needed" if not self.rate else "train a rater, score the pool")
        return f"{src}; select {self.name} keep={self.keep}; train on the selection"


def plan_stages(cfg: Any) -> Plan:
    """Validate ``cfg`` and decide the stages it needs (fails fast, before any slow work)."""
    from lightning_alchemist.pipeline.target import check_groups

    from lightning_alchemist.data.sources import data_identity

    _, _, data = check_groups(cfg)
    data_identity(data, seed=cfg.seed)  # shard paths resolve (a missing dataset fails here, in one line)
    plan = Plan(cfg)
    if plan.rate:
        from lightning_alchemist.rater.config import rater_config
        from lightning_alchemist.rater.recipe import proxy_model_config

        proxy_model_config(rater_config(cfg.rater).proxy, cfg.model)
    return plan


def _banner(step: str, text: str) -> None:
    print(f"\n==> [{step}] {text}", flush=True)


def rater_stage(cfg: Any, cache: Path, data_id: dict) -> StageResult:
    """Train the rater with its proxy (``rater.proxy``) on the pool: ``<cache>/rater/<fp>/rater.ckpt``."""
    from omegaconf import OmegaConf

    from lightning_alchemist.rater.config import rater_config
    from lightning_alchemist.rater.recipe import proxy_model_config, run_train_rater

    rcfg = rater_config(cfg.rater)
    key = {"data": data_id, "batch_size": cfg.data.batch_size, "rater": plain(cfg.rater),
           "proxy": proxy_model_config(rcfg.proxy, cfg.model), "seed": cfg.seed}

    def build(folder: Path) -> dict:
        node = OmegaConf.create({"rater": plain(cfg.rater), "data": plain(cfg.data), "model": plain(cfg.model),
                                 "trainer": plain(cfg.trainer), "seed": cfg.seed, "out": str(folder)})
        return {"checkpoint": str(run_train_rater(node))}

    return cached_stage(cache, "rater", key, build)


def score_stage(cfg: Any, cache: Path, data_id: dict, rater: StageResult) -> StageResult:
    """Score every pool sample with the rater: ``<cache>/ratings/<fp>/ratings/``."""
    from omegaconf import OmegaConf

    from lightning_alchemist.rater.recipe import run_score

    key = {"data": data_id, "rater": rater.fingerprint}

    def build(folder: Path) -> dict:
        node = OmegaConf.create({"rater_ckpt": rater.info["checkpoint"], "data": plain(cfg.data), "trainer": plain(cfg.trainer),
                                 "seed": cfg.seed, "out": str(folder)})
        info = run_score(node)
        return {"ratings": str(folder / "ratings"), "rows": info["rows"], "fingerprint": info["fingerprint"]}

    return cached_stage(cache, "ratings", key, build)


def keys_stage(cfg: Any, cache: Path, data_id: dict, datamodule: Any) -> StageResult:
    """Constant ratings over the pool's keys, for strategies that read no rating (``random``)."""
    import numpy as np

    from lightning_alchemist.selection.ratings import Ratings

    def build(folder: Path) -> dict:
        keys = list(datamodule.pool.keys)
        Ratings.from_arrays(keys, np.zeros(len(keys), dtype=np.float32)).write(folder / "ratings")
        return {"ratings": str(folder / "ratings"), "rows": len(keys), "constant": True}

    return cached_stage(cache, "keys", {"data": data_id}, build)


def select_stage(cfg: Any, cache: Path, ratings_dir: Path, plan: Plan) -> StageResult:
    """Apply the strategy: ``<cache>/selection/<fp>/selection.parquet`` and its histogram."""
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.recipe import select_and_write

    ratings = Ratings.read(ratings_dir)  # read once: its content fingerprint keys the stage, the strategy draws from it
    key = {"ratings": ratings.fingerprint, "selection": plain(cfg.selection), "keep": plan.keep, "seed": cfg.seed}

    def build(folder: Path) -> dict:
        paths = select_and_write(ratings, plan.strategy, plan.keep, cfg.seed, folder)
        return {k: str(v) for k, v in paths.items()}

    return cached_stage(cache, "selection", key, build)


def run_pipeline(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Run every stage ``cfg`` needs; returns the metrics written to ``run_dir/report/metrics.json``."""
    from lightning_alchemist.config import data_config
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.data.sources import data_identity
    from lightning_alchemist.pipeline.report import write_report
    from lightning_alchemist.pipeline.target import train_target

    t_start = time.time()
    plan = plan_stages(cfg)
    threads = cfg.trainer.get("num_threads")
    if threads:
        import torch

        # Before any stage: the tokenizer trained on first use runs before the rater's trainer sets
        # threads, and oversubscribed cores (2 threads next to another busy process) run ~8x slower.
        torch.set_num_threads(int(threads))
    run_dir = Path(run_dir)
    cache = Path(cfg.out) / "cache"
    data = data_config(cfg.data)
    print(f"lightning_alchemist pipeline: data={data.name} model={cfg.model.name} finetune={cfg.finetune.mode} "
          f"selection={plan.name} keep={plan.keep}: {plan.describe()}; run dir {run_dir}", flush=True)
    _banner("data", f"preparing {data.name}")
    datamodule = build_datamodule(data, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    data_id = data_identity(data, seed=cfg.seed)
    stages: dict[str, StageResult] = {}
    ratings_dir: Optional[Path] = plan.ratings_path
    selection_path: Optional[Path] = plan.selection_path
    if plan.rate:
        _banner("rater", f"training the rater with proxy '{cfg.rater.proxy}' (cached by fingerprint)")
        stages["rater"] = rater_stage(cfg, cache, data_id)
        _report_cached(stages["rater"])
        _banner("score", f"scoring {len(datamodule.pool)} pool samples")
        stages["ratings"] = score_stage(cfg, cache, data_id, stages["rater"])
        _report_cached(stages["ratings"])
        ratings_dir = Path(stages["ratings"].info["ratings"])
    elif plan.select and ratings_dir is None:
        stages["keys"] = keys_stage(cfg, cache, data_id, datamodule)
        ratings_dir = Path(stages["keys"].info["ratings"])
    if plan.select:
        _banner("select", f"{plan.name} keep={plan.keep}")
        stages["selection"] = select_stage(cfg, cache, ratings_dir, plan)
        _report_cached(stages["selection"])
        selection_path = Path(stages["selection"].info["selection"])
    _banner("train", f"target {cfg.model.name} ({cfg.finetune.mode}) on "
                     f"{'the selection' if selection_path else 'the whole pool'}")
    target = train_target(cfg, run_dir, selection=selection_path, mode=plan.mode, datamodule=datamodule)
    print(f"val/loss {target.val_loss:.4f} after {target.steps} steps ({target.seconds:.0f} s)", flush=True)
    if not target.is_global_zero:  # under DDP the other ranks stop here: rank 0 evaluates and reports
        return {}
    _banner("evaluate", "generating for the fixed prompts; alignment, FID")
    metrics = _evaluate(cfg, target, run_dir / "eval")
    _banner("report", str(run_dir / "report"))
    report = write_report(
        run_dir / "report", cfg=cfg, plan=plan, datamodule=datamodule, target=target, metrics=metrics,
        ratings_dir=ratings_dir if stages.get("keys") is None else None, selection_path=selection_path,
        stages=stages, seconds=time.time() - t_start, eval_dir=run_dir / "eval",
    )
    return report


def _report_cached(stage: StageResult) -> None:
    if stage.cached:
        print(f"reused cached {stage.stage} {stage.path} (fingerprint {stage.fingerprint})", flush=True)


def _evaluate(cfg: Any, target: Any, out: Path) -> dict[str, Any]:
    """The evaluation metrics of the trained target (validation loss always; generation metrics where the data allows)."""
    from lightning_alchemist.metrics.evaluate import evaluate_model

    out.mkdir(parents=True, exist_ok=True)
    metrics = dict(evaluate_model(target.module, target.datamodule, cfg.get("eval"), out))
    metrics.setdefault("val_loss", target.val_loss)
    (out / "metrics.json").write_text(json.dumps(plain(metrics), indent=2, sort_keys=True, default=str))
    return metrics
