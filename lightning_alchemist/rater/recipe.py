"""The ``train_rater`` and ``score`` stages as library calls (the recipes are thin wrappers).

- :func:`train_rater`: a datamodule + the proxy's model config + the rater config ->
  ``OUT/rater.ckpt`` (plus the last epochs' checkpoints and ``last.ckpt`` under ``OUT/rater_checkpoints``, and
  CSV/TensorBoard logs under ``OUT/rater_logs``).
  The proxy is first warmed up on the validation split when ``rater.warmup.steps > 0``
  (:func:`warm_up_stage`, cached); with ``rater.score_with: proxy`` (the default) that warm-up is the
  whole stage: ``rater.ckpt`` holds the warmed-up proxy, which then scores directly (no rater network).
- :func:`score_pool`: a rater + a datamodule -> ``OUT/ratings/<shard>.parquet``.
- :func:`run_train_rater`, :func:`run_score`: the same from a composed config (what the recipes call).
  Multi-device: ``trainer.devices=N trainer.strategy=ddp``; multi-node: launch one process per
  device with ``srun`` (SLURM) or ``torchrun --nnodes M --nproc-per-node N`` and pass
  ``trainer.num_nodes=M trainer.devices=N``; Lightning reads the cluster environment.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning_alchemist.config import DataConfig, as_container
from lightning_alchemist.features.config import FeaturesConfig
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.paths import resume_checkpoint
from lightning_alchemist.runtime import distributed_guard, set_threads
from lightning_alchemist.rater.config import RaterConfig, rater_config
from lightning_alchemist.rater.detail import CHECKS, dataset_image_references

__all__ = [
    "ScoreRecipeConfig",
    "build_rater_proxy",
    "warm_up_stage",
    "device_kwargs",
    "rater_path_override",
    "run_score",
    "run_train_rater",
    "score_pool",
    "train_rater",
]

log = logging.getLogger(__name__)


def build_rater_proxy(model_cfg: Any) -> Any:
    """Build the proxy from its model config (package factory, or ``class``/``kwargs`` for a user's proxy)."""
    from lightning_alchemist.rater.scoring import build_proxy_from_spec

    return build_proxy_from_spec({"model": as_container(model_cfg), "finetune": None})


# Trainer arguments a rater/scoring run takes from the run's ``trainer`` group: where and how to run,
# not how long (the target's max_steps must not cut rater training short).
_DEVICE_KEYS = ("accelerator", "devices", "strategy", "num_nodes", "precision", "enable_progress_bar", "log_every_n_steps",
                "limit_train_batches", "limit_predict_batches", "max_epochs", "deterministic")


def device_kwargs(trainer: Any) -> dict:
    """The device keys of a ``trainer`` node (a TrainerConfig, mapping or None) as Lightning Trainer arguments."""
    extra = as_container(trainer) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"config 'trainer': expected a mapping of Lightning Trainer arguments, got {type(extra).__name__}")
    return {k: v for k, v in extra.items() if k in _DEVICE_KEYS and v is not None}


def _multi_process(kwargs: dict) -> bool:
    devices, nodes = kwargs.get("devices", 1), int(kwargs.get("num_nodes", 1) or 1)
    many = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    return many or nodes > 1


def rater_checkpoint_callback(dirpath: Path, keep_checkpoints: int = 2, every_n_steps: Optional[int] = None) -> Any:
    """``last.ckpt`` (what a rerun resumes from) plus the latest ``keep_checkpoints`` checkpoints (older ones are
    deleted), at every epoch's end or, given ``every_n_steps``, every that many steps.

    Keeping every epoch costs ``epochs`` × the proxy's size on disk (tens of GB for a 0.3B proxy).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    if int(keep_checkpoints) < 1:
        raise ConfigError(f"keep_checkpoints: got {keep_checkpoints}, expected at least 1 (the last epochs' checkpoints kept)")
    # "step" is always a monitor candidate: the top-k by step are the latest k.
    if every_n_steps:
        return ModelCheckpoint(dirpath=str(dirpath), filename="step{step:06d}", monitor="step", mode="max",
                               save_top_k=int(keep_checkpoints), save_last=True, every_n_train_steps=int(every_n_steps),
                               save_on_train_epoch_end=False, auto_insert_metric_name=False)
    return ModelCheckpoint(dirpath=str(dirpath), filename="epoch{epoch:02d}", monitor="step", mode="max",
                           save_top_k=int(keep_checkpoints), save_last=True, every_n_epochs=1, auto_insert_metric_name=False)


def _warmup_line(info: dict) -> str:
    w = info.get("warmup") or {}
    if not w:
        return "no warm-up"
    how = "cached" if w.get("cached") else f"{w.get('seconds', 0):.0f} s"
    return f"warm-up {w.get('steps_run')} steps, best {w.get('best_step')} (held-out loss {w.get('best_holdout_loss', float('nan')):.3f}), {how}"


def image_check_versions(rcfg: Any) -> dict[str, int]:
    """``{check: statistic version}`` of the image checks the direct scorer of ``rcfg`` applies (weight > 0;
    none unless ``score_with=proxy``): part of what names a trained rater, so a changed statistic retrains it."""
    if rcfg.score_with != "proxy":
        return {}
    return {name: check.version for name, check in CHECKS.items() if getattr(rcfg, f"{name}_weight") > 0}


def warm_up_stage(rcfg: Any, model_cfg: Any, datamodule: Any, seed: int = 0, features: Any = None,
                  resume: str = "auto") -> tuple[Any, Any, dict]:
    """The proxy warmed up on the validation split (``rater.warmup``; cached), and for the penalty
    objective a reference warmed up the same way on the pool. Returns ``(proxy, reference, info)``.

    The splits are encoded once with the proxy's frozen encoders (cached,
    :func:`~lightning_alchemist.rater.encodes.cached_encodes`). With ``warmup.steps: 0`` the proxy
    comes back as built (the official cold start) and no split is encoded. ``features``: a feature store
    (:mod:`lightning_alchemist.features`) of the same encoders, read instead of encoding the splits.
    """
    from lightning_alchemist.rater.encodes import cached_encodes
    from lightning_alchemist.rater.warmup import warm_up_proxy

    proxy = build_rater_proxy(model_cfg)
    info: dict[str, Any] = {}
    wcfg = dataclasses.replace(rcfg.warmup, seed=rcfg.warmup.seed + seed)
    reference = None
    if rcfg.warmup.steps > 0 or rcfg.objective == "penalty":
        datamodule.prepare_data()
        datamodule.setup("fit")
    if rcfg.warmup.steps > 0:
        val, vinfo = cached_encodes(proxy, datamodule.val, features=features)
        info["warmup"] = warm_up_proxy(proxy, val, wcfg, vinfo["fingerprint"], role="val", resume=resume).as_dict()
        info["encodes_val"] = vinfo
        log.info("rater proxy: %s", _warmup_line(info))
    checks = list(image_check_versions(rcfg))
    if checks:
        # where clean images' detail, noise level and contrast lie (the scorer penalises images far outside)
        refs = dataset_image_references(datamodule.val, checks)
        info["image_checks"] = {name: ref.as_dict() for name, ref in refs.items()}
        log.info("rater image-check references (validation split): %s", info["image_checks"])
    if rcfg.objective == "penalty":
        if rcfg.warmup.steps <= 0:
            raise ConfigError("config 'rater.objective=penalty' warms a reference up on the pool: set rater.warmup.steps > 0")
        reference = build_rater_proxy(model_cfg)
        pool, pinfo = cached_encodes(reference, datamodule.pool, features=features)
        info["reference"] = warm_up_proxy(reference, pool, wcfg, pinfo["fingerprint"], role="pool", resume=resume).as_dict()
    return proxy, reference, info


def train_rater(datamodule: Any, proxy_cfg: Any, rater_cfg: Optional[RaterConfig] = None, out: str | Path = "outputs",
                seed: int = 0, devices: Optional[Mapping[str, Any]] = None, keep_checkpoints: Optional[int] = None,
                features: Any = None, resume: str = "auto") -> Path:
    """Train the rater with a proxy built from ``proxy_cfg`` on ``datamodule``'s pool and validation split.

    Args:
        datamodule: a :class:`~lightning_alchemist.data.datamodule.T2IDataModule` (built once by the caller).
        proxy_cfg: the proxy's model config (a ``conf/model`` entry: StarConfig, FluxConfig, or a mapping).
        rater_cfg: the rater's config (defaults: :class:`RaterConfig`).
        out: folder for ``rater.ckpt``, per-epoch checkpoints and logs (``rater_logs``).
        seed: the run's seed (plus ``rater_cfg.seed``).
        devices: Lightning device arguments (:func:`device_kwargs`).
        keep_checkpoints: checkpoints kept under ``OUT/rater_checkpoints`` (the latest; plus ``last.ckpt``);
            None: ``rater_cfg.keep_checkpoints``. They are written every ``rater_cfg.checkpoint_every_n_steps``
            steps (None: every epoch).
        resume: ``auto`` continues an interrupted training from ``OUT/rater_checkpoints/last.ckpt`` (and an
            interrupted warm-up from its saved state) with the same data order; ``never`` starts over.
        features: a :class:`~lightning_alchemist.features.store.FeatureStore` of the proxy's frozen encoders over this
            data: the warm-up and the rater's steps read it instead of decoding images and running the encoders.

    Returns:
        The path of ``OUT/rater.ckpt``.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_alchemist.callbacks.progress import progress_settings
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.rater.data import RaterDataModule
    from lightning_alchemist.rater.module import RaterModule, infer_rater_dims

    rcfg = rater_cfg if isinstance(rater_cfg, RaterConfig) else rater_config(rater_cfg)
    run_seed = int(seed) + rcfg.seed
    pl.seed_everything(run_seed, workers=True, verbose=False)
    out = Path(out)
    # The proxy's tokenizer fits this pool (not shapes), trained once and cached by the data's identity.
    model_node = as_container(fit_to_data(proxy_cfg, datamodule.cfg))
    proxy, reference, info = warm_up_stage(rcfg, model_node, datamodule, run_seed, features=features, resume=resume)
    spec = {"model": model_node, "finetune": None}
    if rcfg.score_with == "proxy":
        from lightning_alchemist.rater.direct import ProxyScorer

        path = ProxyScorer(proxy, rcfg, reference=reference, proxy_spec=spec, info=info).save(out / "rater.ckpt")
        if info.get("warmup"):  # the warm-up curve where reports look for the rater's training curves
            from lightning_alchemist.rater.warmup import WarmupResult, write_warmup_metrics

            write_warmup_metrics(WarmupResult(**info["warmup"]), out / "rater_logs")
        print(f"proxy warmed up for direct scoring ({rcfg.objective}; {_warmup_line(info)}) -> {path}")
        return path
    if info.get("warmup") and rcfg.warmup.continuation == "frozen":
        rcfg = dataclasses.replace(rcfg, freeze_proxy=True)  # the rater learns from the warmed-up proxy as it is
    data = RaterDataModule(datamodule, seed=run_seed)
    token_dim, text_dim = infer_rater_dims(proxy, data.first_val_batch())
    module = RaterModule(proxy, token_dim, text_dim, rcfg, proxy_spec=spec, reference=reference)
    logs = out / "rater_logs"
    keep = keep_checkpoints
    # deterministic="warn": torch's deterministic kernels where it has them (a warning, not an error, for
    # ops without one), so a seeded rerun trains the same rater
    kwargs = {"max_epochs": rcfg.epochs, "accelerator": "auto", "devices": 1, "log_every_n_steps": 10, "deterministic": "warn",
              **dict(devices or {})}
    if rcfg.steps_per_epoch:
        # An epoch is a pass over the validation loader, cut to steps_per_epoch batches (the lr and
        # alpha schedules follow the shorter epoch: Lightning's num_training_batches).
        kwargs["limit_train_batches"] = int(rcfg.steps_per_epoch)
    if _multi_process(kwargs) and kwargs.get("strategy") in (None, "auto", "ddp"):
        # Not every parameter gets a gradient every step (group head off, no scale levels, frozen
        # proxy), so DDP must look for unused parameters.
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    show_bar, progress = progress_settings(kwargs.pop("enable_progress_bar", True), name="rater")
    trainer = pl.Trainer(
        enable_progress_bar=show_bar,
        logger=[CSVLogger(str(logs), name=""), TensorBoardLogger(str(logs), name="tb")],
        callbacks=[*progress, rater_checkpoint_callback(out / "rater_checkpoints", keep if keep is not None else rcfg.keep_checkpoints,
                                                        rcfg.checkpoint_every_n_steps)],
        **kwargs,
    )
    from lightning_alchemist.features.dataset import use_features

    start = resume_checkpoint(out / "rater_checkpoints", resume)
    if start is not None and trainer.is_global_zero:
        print(f"resuming rater training from {start} (resume=auto; resume=never starts over)", flush=True)
    with distributed_guard("rater training", int(trainer.world_size)), \
            use_features(datamodule, features, proxy, stage="rater"):
        trainer.fit(module, datamodule=data, ckpt_path=str(start) if start is not None else None)
        path = out / "rater.ckpt"
        trainer.save_checkpoint(str(path))
    if trainer.is_global_zero:
        print(f"rater trained ({rcfg.meta_gradient}, {rcfg.epochs} epochs) -> {path}")
    return path


def score_pool(rater: Any, datamodule: Any, out: str | Path, devices: Optional[Mapping[str, Any]] = None,
               overwrite: bool = False, features: Any = None) -> dict[str, Any]:
    """Score every pool sample of ``datamodule`` with ``rater`` (a RaterModule or a ``rater.ckpt`` path) into ``OUT/ratings``.

    ``features``: a feature store of the rater's proxy encoders over this data, read instead of running the encoders;
    the images are not decoded either, unless the rater's image checks measure them (``needs_images``).

    Returns the scorer's summary (``fingerprint``, ``rows``, written and skipped shards) plus ``ratings``, the folder,
    and ``features``, whether the feature cache was read.
    """
    from lightning_alchemist.rater.scoring import load_rater, score

    module = load_rater(rater) if isinstance(rater, (str, Path)) else rater
    ratings_dir = Path(out) / "ratings"
    from lightning_alchemist.features.dataset import use_features

    # The image checks measure the decoded images, which the cache holds none of: the batches then carry both,
    # the stored encodes (no encoder forward) and the images (decoded, as the image path decodes them).
    with_images = bool(getattr(module, "needs_images", False))
    with use_features(datamodule, features, module.proxy, stage="score", with_images=with_images) as cached:
        info = score(module, datamodule, ratings_dir, trainer_kwargs=dict(devices or {}), overwrite=overwrite)
    print(
        f"scored {info['rows']} samples into {len(info['written_shards'])} shard files "
        f"(skipped {len(info['skipped_shards'])} finished) -> {ratings_dir} [fingerprint {info['fingerprint']}]"
    )
    return {**info, "ratings": str(ratings_dir), "features": bool(cached)}


def run_train_rater(cfg: Any, keep_checkpoints: Optional[int] = None) -> Path:
    """``recipes/train_rater.py``: validate a root config, build its datamodule once, :func:`train_rater`."""
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.schema import validate

    v = validate(cfg)
    set_threads(v.trainer.num_threads)
    datamodule = build_datamodule(v.data, seed=v.seed)
    features = None
    if v.features.use != "off" and v.data.style == "map":
        # the encode stage the pipeline runs (cached under OUT/cache/features): encode once, then train from it
        from lightning_alchemist.pipeline.run import features_stage

        datamodule.prepare_data()
        datamodule.setup("fit")
        _, features = features_stage(v, datamodule, v.out / "cache", v.data_id, v.rater_proxy)
    return train_rater(datamodule, v.rater_proxy, v.rater, v.out, seed=v.seed,
                       devices=device_kwargs(v.trainer), keep_checkpoints=keep_checkpoints, features=features,
                       resume=v.resume)


def rater_path_override(argv: list[str]) -> list[str]:
    """Map the documented ``rater=PATH`` of ``recipes/score.py`` to its config key ``rater_ckpt=PATH``.

    ``rater`` is also a config group (``conf/rater``), so Hydra would read ``rater=PATH`` as a
    group choice; the recipe rewrites it before Hydra parses the command line.
    """
    return [f"rater_ckpt={a[len('rater='):]}" if a.startswith("rater=") else a for a in argv]


@dataclass
class ScoreRecipeConfig:
    """Schema of ``conf/score.yaml``."""

    rater_ckpt: Optional[str] = None  # path to rater.ckpt (required; the command line's ``rater=PATH``)
    out: str = "outputs"
    seed: int = 0
    overwrite: bool = False  # rescore shards written by another rater/config instead of refusing
    data: DataConfig = field(default_factory=DataConfig)
    # off: decode and encode every sample; auto: read the feature cache under OUT/cache/features when one was
    # written for this data by the rater's encoders (recipes/train_rater.py or the pipeline writes it)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # Where to run (Lightning Trainer arguments: accelerator, devices, strategy, num_nodes, precision,
    # enable_progress_bar) and num_threads; a rating does not depend on any of them.
    trainer: dict[str, Any] = field(default_factory=dict)


def run_score(cfg: Any) -> dict[str, Any]:
    """``recipes/score.py``: score every pool sample of ``cfg.data`` with ``cfg.rater_ckpt`` into ``OUT/ratings``."""
    from lightning_alchemist.config import to_dataclass
    from lightning_alchemist.data.datamodule import build_datamodule

    node = as_container(cfg)
    node = {k: v for k, v in node.items() if k in {f.name for f in dataclasses.fields(ScoreRecipeConfig)}}
    conf = to_dataclass(node, ScoreRecipeConfig, "score")
    if not conf.rater_ckpt:
        raise ConfigError("config 'rater' is required: pass rater=DIR/rater.ckpt (written by recipes/train_rater.py)")
    set_threads(conf.trainer.get("num_threads"))
    rater: Any = conf.rater_ckpt
    features = None
    if conf.features.use != "off":
        from lightning_alchemist.data.sources import data_identity
        from lightning_alchemist.features.encode import data_fingerprint
        from lightning_alchemist.features.identity import encoder_digest
        from lightning_alchemist.features.store import find_store
        from lightning_alchemist.rater.scoring import load_rater

        rater = load_rater(conf.rater_ckpt)
        features = find_store(Path(conf.out) / "cache" / "features", encoder_digest(rater.proxy),
                              data_fingerprint(data_identity(conf.data, seed=conf.seed)))
        if features is None and conf.features.use == "on":
            raise ConfigError(f"config 'features.use=on': no feature cache for this data and rater under {Path(conf.out) / 'cache' / 'features'}; "
                              "run recipes/train_rater.py with the same out, data and seed first, or pass features.use=auto")
    return score_pool(rater, build_datamodule(conf.data, seed=conf.seed), conf.out,
                      devices=device_kwargs(conf.trainer), overwrite=conf.overwrite, features=features)
