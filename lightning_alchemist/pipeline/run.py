"""The whole pipeline: rate → score → select → train → evaluate → report.

Rating, scoring, selection and the target's training are cached under ``<out>/cache`` by fingerprints of
their inputs and config (:mod:`lightning_alchemist.pipeline.cache`), so a sweep over ``keep`` or
``selection`` trains the rater and scores the pool once, and a rerun of a killed job continues its
training from the last checkpoint (``resume=auto``). Evaluation and the report go to the job's run dir
(``<run dir>/train`` links to the target's training folder).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.config import as_container
from lightning_alchemist.pipeline.cache import StageResult, _is_rank_zero, cached_stage, fingerprint
from lightning_alchemist.rater.config import rater_identity
from lightning_alchemist.rater.heuristics import HeuristicConfig
from lightning_alchemist.runtime import set_threads
from lightning_alchemist.schema import Validated, model_name, validate

__all__ = ["Plan", "plan_stages", "run_pipeline"]

log = logging.getLogger(__name__)

# Strategies that read no rating values: they need only the pool's keys, not a rater.
_RATING_FREE = {"random"}


class Plan:
    """Which stages a validated config needs: ``rate`` (train a rater and score), ``select``, or neither (all data)."""

    def __init__(self, v: Validated) -> None:
        self.keep = v.keep
        self.strategy = v.strategy
        self.selection_path = v.selection_path
        self.ratings_path = v.ratings
        name = self.strategy.name if self.strategy is not None else "none"
        curriculum = name == "curriculum"  # reweights every epoch, even at keep=1
        self.select = self.selection_path is None and self.strategy is not None and (self.keep < 1.0 or curriculum)
        self.rate = self.select and self.ratings_path is None and name not in _RATING_FREE
        # rater=heuristic: model-free ratings (compressed size, entropy, a metadata column ...) instead of a learned rater
        self.heuristic = v.rater if isinstance(v.rater, HeuristicConfig) else None
        self.mode = "weighted" if curriculum else "subset"
        # What the run trained on, for reports and sweep tables: keep=1.0 with any strategy is all data.
        self.name = "given" if self.selection_path else (name if self.select else "none")

    def describe(self) -> str:
        if self.selection_path:
            return f"train with the given selection {self.selection_path}"
        if not self.select:
            return "train on the whole pool (no selection)"
        learned = f"rate the pool by {self.heuristic.score} (heuristic)" if self.heuristic else "train a rater, score the pool"
        src = f"ratings from {self.ratings_path}" if self.ratings_path else ("no ratings needed" if not self.rate else learned)
        return f"{src}; select {self.name} keep={self.keep}; train on the selection"


def plan_stages(cfg: Any) -> Plan:
    """Validate ``cfg`` (every group, before any slow work) and decide the stages it needs."""
    return Plan(validate(cfg))


def _banner(step: str, text: str) -> None:
    print(f"\n==> [{step}] {text}", flush=True)


def rater_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict) -> StageResult:
    """Train the rater with its proxy on the pool: ``<cache>/rater/<fp>/rater.ckpt``."""
    from lightning_alchemist.rater.recipe import device_kwargs, train_rater

    key = {"data": data_id, "batch_size": v.data.batch_size, "rater": rater_identity(v.rater),
           "proxy": as_container(v.rater_proxy), "seed": v.seed}

    def build(folder: Path) -> dict:
        path = train_rater(datamodule, v.rater_proxy, v.rater, folder, seed=v.seed, devices=device_kwargs(v.trainer), resume=v.resume)
        return {"checkpoint": str(path)}

    return cached_stage(cache, "rater", key, build)


def score_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, rater: StageResult) -> StageResult:
    """Score every pool sample with the rater: ``<cache>/ratings/<fp>/ratings/``."""
    from lightning_alchemist.rater.recipe import device_kwargs, score_pool

    key = {"data": data_id, "rater": rater.fingerprint}

    def build(folder: Path) -> dict:
        info = score_pool(rater.info["checkpoint"], datamodule, folder, devices=device_kwargs(v.trainer))
        return {"ratings": info["ratings"], "rows": info["rows"], "fingerprint": info["fingerprint"]}

    return cached_stage(cache, "ratings", key, build)


def heuristic_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict) -> tuple[StageResult, Any]:
    """Model-free ratings of every pool sample (``rater=heuristic``): ``<cache>/heuristic/<fp>/ratings/``.

    Returns the stage and its :class:`Ratings` (those the rating run holds, or read once from a cached stage).
    """
    from lightning_alchemist.rater.heuristics import run_heuristic
    from lightning_alchemist.selection.ratings import Ratings

    key = {"data": data_id, "heuristic": v.rater.identity()}
    built: dict[str, Any] = {}

    def build(folder: Path) -> dict:
        run = run_heuristic(datamodule.pool, v.rater, folder)
        built["ratings"] = run.ratings
        return run.summary()

    stage = cached_stage(cache, "heuristic", key, build)
    return stage, built["ratings"] if "ratings" in built else Ratings.read(stage.info["ratings"])


def select_stage(v: Validated, cache: Path, ratings: Any, plan: Plan) -> StageResult:
    """Apply the strategy to ``ratings``: ``<cache>/selection/<fp>/selection.parquet`` and its histogram."""
    from lightning_alchemist.selection.recipe import select_and_write

    key = {"ratings": ratings.fingerprint, "selection": {"name": plan.strategy.name, **plan.strategy.params()},
           "keep": plan.keep, "seed": v.seed}

    def build(folder: Path) -> dict:
        paths = select_and_write(ratings, plan.strategy, plan.keep, v.seed, folder)
        return {k: str(val) for k, val in paths.items()}

    return cached_stage(cache, "selection", key, build)


# Trainer keys that change how often state is saved or shown, not what trains: left out of the target's fingerprint.
_TRAINER_BOOKKEEPING = ("checkpoint_every_n_steps", "checkpoint_every_minutes", "keep_checkpoints", "enable_progress_bar",
                        "log_every_n_steps", "enable_checkpointing")


def target_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, selection: Any, plan: Plan,
                 run_dir: Path) -> tuple[StageResult, Any]:
    """Train the target in ``<cache>/train/<fp>/`` (``<run dir>/train`` links there); returns the stage and a TargetResult.

    The folder is named by what the training depends on (data, model, finetune, trainer, selection, seed), so a
    rerun of an interrupted job finds its checkpoints there and continues (``resume=auto``), and a finished
    training is reused (only evaluation and the report run again).
    """
    from lightning_alchemist.target.train import TargetResult, train_target

    data_node = {k: val for k, val in as_container(v.data).items() if k not in ("num_workers", "cache_dir")}
    trainer_node = {k: val for k, val in as_container(v.trainer).items() if k not in _TRAINER_BOOKKEEPING}
    key = {"data": data_id, "data_cfg": data_node, "model": as_container(v.model), "finetune": as_container(v.finetune),
           "trainer": trainer_node, "selection": selection.fingerprint if selection is not None else None,
           "mode": plan.mode, "seed": v.seed}
    built: dict[str, Any] = {}
    if not v.trainer.enable_checkpointing:  # nothing to resume from or reuse: train in the run dir, as asked
        result = train_target(v.model, v.finetune, v.trainer, datamodule, run_dir, seed=v.seed, selection=selection,
                              mode=plan.mode, allow_partial_ratings=v.allow_partial_ratings, resume=v.resume)
        return StageResult("train", fingerprint(key), Path(run_dir), {}, cached=False), result

    def build(folder: Path) -> dict:
        _link_train(run_dir, folder)  # visible in the run dir while it trains
        result = train_target(v.model, v.finetune, v.trainer, datamodule, folder, seed=v.seed, selection=selection,
                              mode=plan.mode, allow_partial_ratings=v.allow_partial_ratings, resume=v.resume)
        built["target"] = result
        return {"val_loss": result.val_loss, "steps": result.steps, "samples_seen": result.samples_seen,
                "seconds": result.seconds, "log_dir": result.log_dir, "checkpoint": result.checkpoint,
                "selection_stats": result.selection_stats}

    stage = cached_stage(cache, "train", key, build)
    _link_train(run_dir, stage.path)
    if "target" in built:
        return stage, built["target"]
    from lightning_alchemist.metrics.evaluate import load_target

    info = stage.info
    module = load_target(info["checkpoint"])
    return stage, TargetResult(module=module, datamodule=datamodule, val_loss=float(info["val_loss"]), steps=int(info["steps"]),
                               samples_seen=int(info["samples_seen"]), seconds=float(info["seconds"]),
                               log_dir=str(info["log_dir"]), checkpoint=str(info["checkpoint"]),
                               selection_stats=dict(info.get("selection_stats") or {}))


def _link_train(run_dir: Path, folder: Path) -> None:
    """``<run dir>/train`` -> the target stage's ``train`` folder (checkpoints and logs), where users look for them."""
    link = Path(run_dir) / "train"
    if not _is_rank_zero():
        return
    if link.is_symlink():  # library use: several runs share one run dir (out); the latest wins
        link.unlink()
    elif link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    (Path(folder) / "train").mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path(folder).resolve() / "train", target_is_directory=True)


def run_pipeline(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Run every stage ``cfg`` needs; returns the metrics written to ``run_dir/report/metrics.json``.

    Reads as the pipeline goes: validate → data → rate → score → select → train → evaluate → report.
    Each stage is a library call on typed inputs; the datamodule is built once and the ratings and
    the selection are read once, then handed to the stages that need them.
    """
    import numpy as np

    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.pipeline.report import write_report
    from lightning_alchemist.selection.manifest import Selection
    from lightning_alchemist.selection.ratings import Ratings
    t_start = time.time()
    v = validate(cfg)
    plan = Plan(v)
    set_threads(v.trainer.num_threads)
    run_dir = Path(run_dir)
    cache = v.out / "cache"
    print(f"lightning_alchemist pipeline: data={v.data.name} model={model_name(v.model)} finetune={v.finetune.mode} "
          f"selection={plan.name} keep={plan.keep}: {plan.describe()}; run dir {run_dir}", flush=True)
    _banner("data", f"preparing {v.data.name}")
    datamodule = build_datamodule(v.data, seed=v.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    data_id = v.data_id  # stat'ed once by validate (a layout's source files can be many)
    stages: dict[str, StageResult] = {}
    ratings: Optional[Ratings] = None
    if plan.rate and plan.heuristic is not None:
        _banner("rate", f"rating {len(datamodule.pool)} pool samples by {plan.heuristic.score} (no model)")
        stages["heuristic"], ratings = heuristic_stage(v, datamodule, cache, data_id)
        _report_cached(stages["heuristic"])
    elif plan.rate:
        _banner("rater", f"training the rater with proxy '{model_name(v.rater_proxy)}' (cached by fingerprint)")
        stages["rater"] = rater_stage(v, datamodule, cache, data_id)
        _report_cached(stages["rater"])
        _banner("score", f"scoring {len(datamodule.pool)} pool samples")
        stages["ratings"] = score_stage(v, datamodule, cache, data_id, stages["rater"])
        _report_cached(stages["ratings"])
        ratings = Ratings.read(stages["ratings"].info["ratings"])
    elif plan.ratings_path is not None and plan.select:
        # Given ratings must cover the pool: missing shards are an error naming them (or allowed, with a warning).
        ratings = Ratings.read(plan.ratings_path, pool=datamodule.pool.keys_by_shard(),
                               allow_partial_ratings=v.allow_partial_ratings, keep=plan.keep)
    elif plan.select:  # a strategy that reads no rating values: constant ratings over the pool's keys
        keys = list(datamodule.pool.keys)
        ratings = Ratings.from_arrays(keys, np.zeros(len(keys), dtype=np.float32))
    selection_path: Optional[Path] = plan.selection_path
    if plan.select:
        _banner("select", f"{plan.name} keep={plan.keep}")
        stages["selection"] = select_stage(v, cache, ratings, plan)
        _report_cached(stages["selection"])
        selection_path = Path(stages["selection"].info["selection"])
    selection = Selection.read(selection_path) if selection_path is not None else None
    _banner("train", f"target {model_name(v.model)} ({v.finetune.mode}) on "
                     f"{'the selection' if selection is not None else 'the whole pool'}")
    stages["train"], target = target_stage(v, datamodule, cache, data_id, selection, plan, run_dir)
    _report_cached(stages["train"])
    # The validation loss reported (console and files alike) is the evaluation's val_loss, below; Lightning's own
    # last validation (trainer.limit_val_batches batches) is kept in the report's train section as trainer_val_loss.
    print(f"trained {target.steps} steps ({target.seconds:.0f} s)", flush=True)
    if not target.is_global_zero:  # under DDP the other ranks stop here: rank 0 evaluates and reports
        return {}
    _banner("evaluate", "generating for the fixed prompts; alignment, FID")
    metrics = _evaluate(v, target, run_dir / "eval")
    _banner("report", str(run_dir / "report"))
    rated = ratings if plan.rate or plan.ratings_path is not None else None  # constant ratings say nothing
    return write_report(
        run_dir / "report", v=v, plan=plan, datamodule=datamodule, target=target, metrics=metrics,
        ratings=rated, selection=selection, selection_path=selection_path, stages=stages, seconds=time.time() - t_start,
        eval_dir=run_dir / "eval",
    )


def _report_cached(stage: StageResult) -> None:
    if stage.cached:
        print(f"reused cached {stage.stage} {stage.path} (fingerprint {stage.fingerprint})", flush=True)


def _evaluate(v: Validated, target: Any, out: Path) -> dict[str, Any]:
    """The evaluation metrics of the trained target (validation loss always; generation metrics where the data allows)."""
    from lightning_alchemist.metrics.evaluate import evaluate_model

    out.mkdir(parents=True, exist_ok=True)
    metrics = dict(evaluate_model(target.module, target.datamodule, v.eval, out))
    metrics.setdefault("val_loss", target.val_loss)
    (out / "metrics.json").write_text(json.dumps(as_container(metrics), indent=2, sort_keys=True, default=str))
    return metrics
