"""The whole pipeline: encode → rate → score → select → train → evaluate → report.

The encode stage writes each sample's frozen-encoder outputs once (``features.use``, default ``auto``);
rater training, scoring and target training read them. Encoding, rating, scoring, selection and the target's
training are cached under ``<out>/cache`` by fingerprints of their inputs and config
(:mod:`lightning_alchemist.pipeline.cache`), so a sweep over ``keep`` or ``selection`` trains the rater and
scores the pool once, and a rerun of a killed job continues its training from the last checkpoint
(``resume=auto``). Evaluation and the report go to the job's run dir (``<run dir>/train`` links to the
target's training folder).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.config import as_container
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.pipeline.cache import StageResult, _is_rank_zero, cached_stage, fingerprint
from lightning_alchemist.rater.config import rater_identity
from lightning_alchemist.rater.heuristics import HeuristicConfig
from lightning_alchemist.runtime import set_threads
from lightning_alchemist.schema import Validated, model_name, validate

__all__ = ["Plan", "features_stage", "plan_stages", "run_pipeline"]

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
        # curation stages (dedup, cluster budgets, rebalancing) around the strategy; dedup runs even at keep=1
        self.curation = v.curation if v.curation.active and self.selection_path is None else None
        self.select = self.selection_path is None and (
            (self.strategy is not None and (self.keep < 1.0 or curriculum)) or self.curation is not None)
        self.rate = self.select and self.ratings_path is None and name not in _RATING_FREE and name != "none"
        # rater=heuristic: model-free ratings (compressed size, entropy, a metadata column ...) instead of a learned rater
        self.heuristic = v.rater if isinstance(v.rater, HeuristicConfig) else None
        self.mode = "weighted" if curriculum else (self.curation.mode if self.curation is not None else "subset")
        # What the run trained on, for reports and sweep tables: keep=1.0 with any strategy is all data.
        self.name = "given" if self.selection_path else (name if self.select else "none")
        if self.curation is not None:
            self.name = f"{self.curation.name}+{name if name != 'none' else 'random'}"

    def describe(self) -> str:
        if self.selection_path:
            return f"train with the given selection {self.selection_path}"
        if not self.select:
            return "train on the whole pool (no selection)"
        learned = f"rate the pool by {self.heuristic.score} (heuristic)" if self.heuristic else "train a rater, score the pool"
        src = f"ratings from {self.ratings_path}" if self.ratings_path else ("no ratings needed" if not self.rate else learned)
        cur = f"; curate ({self.curation.name}: dedup={self.curation.dedup}, budgets={self.curation.budgets}, " \
              f"rebalance={self.curation.rebalance})" if self.curation is not None else ""
        return f"{src}{cur}; select {self.name} keep={self.keep}; train on the selection"


def plan_stages(cfg: Any) -> Plan:
    """Validate ``cfg`` (every group, before any slow work) and decide the stages it needs."""
    return Plan(validate(cfg))


def _banner(step: str, text: str) -> None:
    print(f"\n==> [{step}] {text}", flush=True)


def features_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, model_cfg: Any,
                   proxy: Any = None) -> tuple[Optional[StageResult], Any]:
    """Encode every pool and validation sample once with ``model_cfg``'s frozen encoders: ``<cache>/features/<fp>/``.

    Returns ``(stage, store)``: the cached stage and its :class:`~lightning_alchemist.features.store.FeatureStore`,
    or ``(None, None)`` with ``features.use=off`` or streamed data. The fingerprint names the data and the
    encoders' weights, so a target whose frozen encoders equal the rater proxy's reuses the same features.
    """
    from lightning_alchemist.features.encode import encode_features
    from lightning_alchemist.features.identity import encoder_digest
    from lightning_alchemist.features.store import FeatureStore
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.rater.recipe import build_rater_proxy, device_kwargs

    if v.features.use == "off" or v.data.style != "map":
        return None, None
    if proxy is None:
        proxy = build_rater_proxy(as_container(fit_to_data(model_cfg, datamodule.cfg)))
    if not getattr(proxy, "frozen_attrs", ()):
        # its digest covers every weight, trainable ones too: no other stage's proxy would match the cache
        if v.features.use == "on":
            raise ConfigError(f"config 'features.use=on': proxy {type(proxy).__name__} names no frozen_attrs (its frozen encoders), "
                              "so its encodes cannot be cached; declare them on the class or pass features.use=auto")
        log.info("features: %s names no frozen_attrs; no encode stage (every stage encodes online)", type(proxy).__name__)
        return None, None
    digest = encoder_digest(proxy)
    key = {"data": data_id, "encoders": digest, "image_size": v.data.image_size}

    def build(folder: Path) -> dict:
        return encode_features(proxy, datamodule, folder, data_id=data_id, batch_size=v.features.batch_size,
                               trainer_kwargs=device_kwargs(v.trainer))

    stage = cached_stage(cache, "features", key, build)
    store = FeatureStore(stage.path, fingerprint=stage.info["fingerprint"])
    store.encoders = digest
    return stage, store


def rater_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, features: Any = None) -> StageResult:
    """Train the rater with its proxy on the pool: ``<cache>/rater/<fp>/rater.ckpt``."""
    from lightning_alchemist.rater.recipe import device_kwargs, image_check_versions, train_rater

    key = {"data": data_id, "batch_size": v.data.batch_size, "rater": rater_identity(v.rater),
           "proxy": as_container(v.rater_proxy), "seed": v.seed}
    checks = image_check_versions(v.rater)
    if checks:  # the checks' references are measured in this stage: a changed statistic must not reuse them
        key["image_checks"] = checks

    def build(folder: Path) -> dict:
        path = train_rater(datamodule, v.rater_proxy, v.rater, folder, seed=v.seed, devices=device_kwargs(v.trainer),
                           features=features, resume=v.resume)
        return {"checkpoint": str(path)}

    return cached_stage(cache, "rater", key, build)


def score_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, rater: StageResult, features: Any = None) -> StageResult:
    """Score every pool sample with the rater: ``<cache>/ratings/<fp>/ratings/``."""
    from lightning_alchemist.rater.recipe import device_kwargs, score_pool

    key = {"data": data_id, "rater": rater.fingerprint}

    def build(folder: Path) -> dict:
        info = score_pool(rater.info["checkpoint"], datamodule, folder, devices=device_kwargs(v.trainer), features=features)
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


def embeddings_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, ratings_dir: Optional[str]) -> StageResult:
    """Per-sample curation embeddings, keyed by sample key: ``<cache>/embeddings/<fp>/embeddings.npy`` (+ keys)."""
    from lightning_alchemist.curation.embeddings import embeddings_from_ratings, load_sidecar, pool_embeddings

    cfg = v.curation.embeddings
    key = {"data": data_id, "embeddings": cfg.identity()}
    if cfg.source == "ratings":
        if ratings_dir is None:
            raise ConfigError("config 'curation.embeddings.source': 'ratings' needs ratings from a scorer that wrote an "
                              "'embedding' column; use source=thumbnail or a sidecar")
        key["ratings"] = str(ratings_dir)

    def build(folder: Path) -> dict:
        if cfg.source == "sidecar":
            emb = load_sidecar(cfg.path, cfg.column)
        elif cfg.source == "ratings":
            emb = embeddings_from_ratings(ratings_dir, cfg.column)
        else:
            emb = pool_embeddings(datamodule.pool, cfg)
        emb.write(folder)
        return {"embeddings": str(folder), "rows": len(emb), "dim": emb.dim, "skipped": emb.meta.get("skipped", {})}

    return cached_stage(cache, "embeddings", key, build)


def select_stage(v: Validated, cache: Path, ratings: Any, plan: Plan, embeddings: Optional[StageResult] = None,
                 has_ratings: bool = True) -> StageResult:
    """Apply the strategy to ``ratings``: ``<cache>/selection/<fp>/selection.parquet`` and its histogram.

    With curation stages (``plan.curation``): dedup → cluster budgets → the strategy inside them → rebalancing
    weights, on the ``embeddings`` stage's vectors; the folder also holds ``curation.parquet`` (every pool row's
    provenance) and ``curation.json`` (counts per stage, cluster sizes).
    """
    from lightning_alchemist.selection.recipe import select_and_write

    strategy = {"name": plan.strategy.name, **plan.strategy.params()} if plan.strategy is not None else {"name": "none"}
    key = {"ratings": ratings.fingerprint, "selection": strategy, "keep": plan.keep, "seed": v.seed}
    if plan.curation is not None:
        assert embeddings is not None
        key["curation"] = {**plan.curation.identity(), "embeddings": embeddings.fingerprint, "has_ratings": has_ratings}

    def build(folder: Path) -> dict:
        if plan.curation is not None:
            return curate_and_write(ratings, embeddings, plan, v.seed, folder, has_ratings, v.trainer.num_threads)
        paths = select_and_write(ratings, plan.strategy, plan.keep, v.seed, folder)
        return {k: str(val) for k, val in paths.items()}

    return cached_stage(cache, "selection", key, build)


def curate_and_write(ratings: Any, embeddings: StageResult, plan: Plan, seed: int, folder: Path, has_ratings: bool,
                     threads: Optional[int] = None) -> dict:
    """The curation plan on ``ratings`` and the stored embeddings; writes the manifest, provenance and histogram."""
    from lightning_alchemist.curation.embeddings import Embeddings
    from lightning_alchemist.curation.plan import curate
    from lightning_alchemist.selection.plot import plot_selection

    result = curate(ratings, Embeddings.read(embeddings.info["embeddings"]), plan.curation, plan.strategy, plan.keep,
                    seed=seed, has_ratings=has_ratings, threads=threads)
    paths = result.write(folder)
    paths["histogram"] = plot_selection(ratings, result.selection, folder / "selection_histogram.png")
    counts = result.summary["counts"]
    print(f"curated {plan.curation.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f" -> {paths['selection']}", flush=True)
    return {**{k: str(val) for k, val in paths.items()}, "counts": counts}


def captions_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict) -> Optional[StageResult]:
    """Build the pool's caption variants once: ``<cache>/captions/<fp>/captions.parquet`` (``None``: no stored source)."""
    from lightning_alchemist.curation.captions import build_caption_variants

    if not v.captions.sources():
        return None
    key = {"data": data_id, "captions": v.captions.build_identity()}

    def build(folder: Path) -> dict:
        return build_caption_variants(datamodule.pool, v.captions, folder, data_cfg=v.data).as_dict()

    return cached_stage(cache, "captions", key, build)


# Trainer keys that change how often state is saved or shown, not what trains: left out of the target's fingerprint.
_TRAINER_BOOKKEEPING = ("checkpoint_every_n_steps", "checkpoint_every_minutes", "keep_checkpoints", "enable_progress_bar",
                        "log_every_n_steps", "enable_checkpointing")


def target_stage(v: Validated, datamodule: Any, cache: Path, data_id: dict, selection: Any, plan: Plan,
                 run_dir: Path, features: Any = None) -> tuple[StageResult, Any]:
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
    if v.captions.enabled:  # the variants change what the target reads (the feature cache does not: same weights)
        key["captions"] = as_container(v.captions)
    built: dict[str, Any] = {}
    if not v.trainer.enable_checkpointing:  # nothing to resume from or reuse: train in the run dir, as asked
        result = train_target(v.model, v.finetune, v.trainer, datamodule, run_dir, seed=v.seed, selection=selection,
                              mode=plan.mode, allow_partial_ratings=v.allow_partial_ratings, resume=v.resume)
        return StageResult("train", fingerprint(key), Path(run_dir), {}, cached=False, seconds=result.seconds), result

    def build(folder: Path) -> dict:
        _link_train(run_dir, folder)  # visible in the run dir while it trains
        result = train_target(v.model, v.finetune, v.trainer, datamodule, folder, seed=v.seed, selection=selection,
                              mode=plan.mode, allow_partial_ratings=v.allow_partial_ratings, resume=v.resume,
                              features=features)
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
    rater_features = None
    if plan.rate and plan.heuristic is not None:
        _banner("rate", f"rating {len(datamodule.pool)} pool samples by {plan.heuristic.score} (no model)")
        stages["heuristic"], ratings = heuristic_stage(v, datamodule, cache, data_id)
        _report_cached(stages["heuristic"])
    elif plan.rate:
        rater_features = _encode(v, datamodule, cache, data_id, v.rater_proxy, stages, "features")
        _banner("rater", f"training the rater with proxy '{model_name(v.rater_proxy)}' (cached by fingerprint)")
        stages["rater"] = rater_stage(v, datamodule, cache, data_id, features=rater_features)
        _report_cached(stages["rater"])
        _banner("score", f"scoring {len(datamodule.pool)} pool samples")
        stages["ratings"] = score_stage(v, datamodule, cache, data_id, stages["rater"], features=rater_features)
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
    if plan.curation is not None:
        _banner("embed", f"curation embeddings ({v.curation.embeddings.source}, cached by fingerprint)")
        ratings_dir = stages["ratings"].info["ratings"] if "ratings" in stages else plan.ratings_path
        stages["embeddings"] = embeddings_stage(v, datamodule, cache, data_id, ratings_dir)
        _report_cached(stages["embeddings"])
    if plan.select:
        _banner("select", f"{plan.name} keep={plan.keep}")
        has_ratings = plan.rate or plan.ratings_path is not None  # else constant ratings over the pool's keys
        stages["selection"] = select_stage(v, cache, ratings, plan, stages.get("embeddings"), has_ratings)
        _report_cached(stages["selection"])
        selection_path = Path(stages["selection"].info["selection"])
    selection = Selection.read(selection_path) if selection_path is not None else None
    chooser = None
    if v.captions.enabled:
        from lightning_alchemist.curation.captions import CaptionChooser, CaptionTable

        _banner("captions", f"caption variants '{v.captions.name}': {', '.join(v.captions.sources()) or 'originals'}"
                            f" (truncate {v.captions.truncate})")
        built = captions_stage(v, datamodule, cache, data_id)
        if built is not None:
            stages["captions"] = built
            _report_cached(built)
            print(f"caption variants stored: {built.info.get('rows')} (skipped: {built.info.get('skipped') or 'none'})",
                  flush=True)
        chooser = CaptionChooser(v.captions, CaptionTable.read(built.path) if built is not None else None, seed=v.seed)
    # Only target training sees the variants (the rater above learned and scored on the shards' captions).
    datamodule.use_captions(chooser)
    if v.data.batching == "mixed" and not v.data.clusters and selection_path is not None:
        datamodule.clusters = str(selection_path)  # a curation manifest carries each sample's cluster
    # Caption variants change a sample's text every epoch: the target then encodes online (cached text states
    # are of the shards' captions).
    same = "features" in stages and as_container(v.model) == as_container(v.rater_proxy) and chooser is None
    target_features = rater_features if same else None
    if not same and chooser is None and _target_encodes(v, datamodule):
        target_features = _encode(v, datamodule, cache, data_id, v.model, stages, "features_target")
    _banner("train", f"target {model_name(v.model)} ({v.finetune.mode}) on "
                     f"{'the selection' if selection is not None else 'the whole pool'}")
    stages["train"], target = target_stage(v, datamodule, cache, data_id, selection, plan, run_dir, features=target_features)
    _report_cached(stages["train"])
    # The validation loss reported (console and files alike) is the evaluation's val_loss, below; Lightning's own
    # last validation (trainer.limit_val_batches batches) is kept in the report's train section as trainer_val_loss.
    print(f"trained {target.steps} steps ({target.seconds:.0f} s)", flush=True)
    if chooser is not None:
        print("captions trained on: " + ", ".join(f"{k} {v_:.1%}" for k, v_ in chooser.shares().items()), flush=True)
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


def _encode(v: Validated, datamodule: Any, cache: Path, data_id: dict, model_cfg: Any, stages: dict, name: str) -> Any:
    """The encode stage for ``model_cfg``'s frozen encoders (recorded in ``stages[name]``); its store, or None when off."""
    if v.features.use == "off" or v.data.style != "map":
        return None
    _banner("encode", f"encoding {len(datamodule.pool)} pool + {len(datamodule.val)} validation samples with "
                      f"'{model_name(model_cfg)}''s frozen encoders, once (cached by fingerprint)")
    stage, store = features_stage(v, datamodule, cache, data_id, model_cfg)
    if stage is not None:
        stages[name] = stage
        _report_cached(stage)
    return store


def _target_encodes(v: Validated, datamodule: Any) -> bool:
    """Whether the target alone is worth an encode stage: ``features.use=on``, or ``auto`` when it sees every pool
    sample at least once (encoding the whole pool for a target that sees half of it costs more than it saves)."""
    from lightning_alchemist.target.trainer import total_steps

    if v.features.use == "off" or v.data.style != "map":
        return False
    if v.features.use == "on":
        return True
    devices = v.trainer.devices if isinstance(v.trainer.devices, int) and v.trainer.devices > 0 else 1
    seen = total_steps(v.trainer, v.data.batch_size) * v.data.batch_size * devices * max(int(v.trainer.num_nodes), 1)
    return seen >= len(datamodule.pool)


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
