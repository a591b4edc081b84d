"""The root configuration schema, its registration with Hydra, and the one ``validate``.

Each config group's dataclass lives with the code it configures and is the single source of its
defaults; the files under ``conf/`` only select and override. :func:`register_configs` stores them in
Hydra's ConfigStore so that composing a config already checks every key, type and string choice
(``rater.epochs=abc`` fails at compose time, in one line). :func:`validate` then runs every
cross-field check (keep in range, strategy parameters, evaluation sizes, devices against the machine,
paths that must exist) before any slow work.

Polymorphic groups pick their schema in their YAML defaults list: ``conf/model/*.yaml`` start with
``schema_star`` or ``schema_flux``, ``conf/selection/*.yaml`` with ``schema_<strategy>``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.config import DataConfig, Resume, as_container, data_config
from lightning_alchemist.curation.plan import CurationConfig, curation_config
from lightning_alchemist.curation.captions import CaptionsConfig, captions_config
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.features.config import FeaturesConfig, features_config
from lightning_alchemist.metrics.evaluate import EvalConfig, eval_config
from lightning_alchemist.proxy.lora import FinetuneConfig, finetune_config
from lightning_alchemist.rater.config import RaterConfig
from lightning_alchemist.rater.heuristics import HeuristicConfig, rater_group_config
from lightning_alchemist.target.trainer import TrainerConfig, trainer_config

__all__ = ["EvaluateRecipeConfig", "RootConfig", "Validated", "register_configs", "selection_schemas", "validate"]


@dataclass
class RootConfig:
    """Schema of ``conf/config.yaml``: top-level values plus one node per config group.

    ``model`` and ``selection`` are polymorphic (a family / a strategy); their YAML files select
    their schema (see the module docstring), so they are typed at compose time too.
    """

    # Fraction of the pool to keep (1.0 = train on everything).
    keep: float = 0.5
    seed: int = 0
    # Output root: artifacts (cache of rater, ratings, selection) and run folders go under it.
    out: str = "outputs"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # The learned rater (RaterConfig, rater=default|official|tiny) or a model-free one
    # (HeuristicConfig, rater=heuristic); the YAML picks the schema like model and selection.
    rater: Any = None
    selection: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Curation stages around the selection (dedup, concept-cluster budgets, rebalancing); curation=none runs none.
    curation: CurationConfig = field(default_factory=CurationConfig)
    # The encode-once feature cache (features.use=auto|on|off): frozen-encoder outputs computed once per
    # dataset and read by rater training, scoring and target training; off for augmentations that must run online.
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # Caption variants for target training (captions=none|templates|flux_reason): sources and their probabilities.
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    experiment: Any = None
    # Reuse artifacts instead of computing them: a ratings folder (skips rater training and
    # scoring) or a selection manifest (skips selection too); recipes/train.py maps selection=PATH here.
    ratings: Optional[str] = None
    selection_path: Optional[str] = None
    # Ratings that miss part of the pool (a killed scoring run, a subset of shard files) are an error
    # naming the missing shards; true accepts them (a warning gives the effective keep).
    allow_partial_ratings: bool = False
    # A rerun of an interrupted job: ``auto`` continues each training (rater, proxy warm-up, target) from the
    # last checkpoint it left under <out>/cache and reuses finished stages; ``never`` trains interrupted ones from step 0.
    resume: Resume = Resume.auto


@dataclass
class EvaluateRecipeConfig:
    """Schema of ``conf/evaluate.yaml`` (``recipes/evaluate.py``): a target checkpoint and the data it was trained on."""

    ckpt: Optional[str] = None  # the target checkpoint (Lightning's last.ckpt from recipes/train.py). Required.
    out: str = "outputs"        # writes metrics.json and generated.png into it
    seed: int = 0               # must match training's seed (it fixes the held-out split of data without val_urls)
    num_threads: Optional[int] = 1
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # None: the model config saved in the checkpoint; model=NAME replaces it (e.g. other sampling settings).
    model: Any = None


def selection_schemas() -> dict[str, type]:
    """One dataclass per strategy (``name`` + the strategy's own fields and defaults), plus ``none``."""
    from lightning_alchemist.selection.strategies import STRATEGIES

    out: dict[str, type] = {}
    for name, cls in STRATEGIES.items():
        hints = typing.get_type_hints(cls)
        fields = [("name", str, field(default=name))]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
            fields.append((f.name, hints[f.name], field(default=default)) if default is not dataclasses.MISSING
                          else (f.name, hints[f.name], field(default_factory=f.default_factory)))
        out[name] = dataclasses.make_dataclass(f"{cls.__name__}Selection", fields)
    out["none"] = dataclasses.make_dataclass("NoSelection", [("name", str, field(default="none"))])
    return out


_REGISTERED = False


def register_configs() -> None:
    """Store the root schema and the polymorphic groups' schemas in Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from lightning_alchemist.paths import register_resolvers

    register_resolvers()
    from hydra.core.config_store import ConfigStore

    from lightning_alchemist.proxy.factory import FAMILIES

    from lightning_alchemist.rater.recipe import ScoreRecipeConfig
    from lightning_alchemist.selection.recipe import SelectConfig
    from lightning_alchemist.data.writeback import WritebackConfig

    store = ConfigStore.instance()
    store.store(name="base_config", node=RootConfig)
    store.store(name="score_schema", node=ScoreRecipeConfig)
    store.store(name="select_schema", node=SelectConfig)
    store.store(name="evaluate_schema", node=EvaluateRecipeConfig)
    store.store(group="rater", name="schema_learned", node=RaterConfig)
    store.store(group="rater", name="schema_heuristic", node=HeuristicConfig)
    store.store(name="write_pruned_schema", node=WritebackConfig)
    for family, loader in FAMILIES.items():
        schema, _ = loader()
        store.store(group="model", name=f"schema_{family}", node=schema)
    for name, schema in selection_schemas().items():
        store.store(group="selection", name=f"schema_{name}", node=schema)
    _REGISTERED = True


@dataclass
class Validated:
    """The validated groups of a root config, as the stages take them."""

    keep: float
    seed: int
    out: Path
    data: DataConfig
    model: Any
    finetune: FinetuneConfig
    rater: Any  # RaterConfig, or HeuristicConfig for a model-free rater
    rater_proxy: Any  # the learned rater's proxy config; None for a heuristic
    strategy: Any
    trainer: TrainerConfig
    eval: EvalConfig
    ratings: Optional[Path]
    selection_path: Optional[Path]
    allow_partial_ratings: bool = False
    resume: str = "auto"
    # The data's identity (:func:`~lightning_alchemist.data.sources.data_identity`: shard or source file stats,
    # generator config), computed once by ``validate(check_paths=True)``; it keys every stage's cache.
    data_id: Optional[dict] = None
    curation: CurationConfig = field(default_factory=CurationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)


def _check_devices(trainer: TrainerConfig) -> None:
    accel = str(trainer.accelerator).lower()
    if accel in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"config 'trainer.accelerator': '{trainer.accelerator}' but this machine has no CUDA GPU; "
                              "use trainer=cpu (or trainer.accelerator=auto)")
        devices = trainer.devices
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise ConfigError(f"config 'trainer.devices': {devices} GPUs asked for, this machine has {torch.cuda.device_count()}")


def _model(node: Any, where: str) -> Any:
    """A model node validated against its family's schema; a user's own proxy (``class`` + ``kwargs``) stays a mapping."""
    from lightning_alchemist.proxy.factory import model_config

    if node is None:
        raise ConfigError(f"config '{where}' is missing: pass {where}=star_tiny (or flux_tiny, star_40m, flux, ...)")
    container = as_container(node)
    if isinstance(container, dict) and "class" in container:
        return container
    return model_config(node)


def model_name(model: Any) -> str:
    """A model config's name (a user's proxy: its class)."""
    if isinstance(model, dict):
        return str(model.get("name") or model.get("class"))
    return str(model.name)


def validate(cfg: Any, check_paths: bool = True) -> Validated:
    """Every cross-field check of a root config, before any slow work; returns the typed groups.

    Raises:
        ConfigError / DataError: one line naming the key, the value and what is expected.
    """
    from lightning_alchemist.selection.strategies import build_strategy
    from lightning_alchemist.target.train import model_image_size

    keep = cfg.keep
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < float(keep) <= 1.0:
        raise ConfigError(f"config 'keep': got {keep!r}, expected a fraction 0 < keep <= 1 (1.0 trains on everything)")
    data = data_config(cfg.data)
    model = _model(cfg.model, "model")
    size = model_image_size(model)
    if size and size != data.image_size:
        raise ConfigError(f"config 'data.image_size': {data.image_size} px, but model '{model_name(model)}' works on {size} px; "
                          f"pass data.image_size={size}")
    finetune = finetune_config(cfg.finetune)
    trainer = trainer_config(cfg.trainer)
    _check_devices(trainer)
    rater = rater_group_config(cfg.rater)
    proxy = None
    if isinstance(rater, RaterConfig):
        proxy = _model(rater.proxy, "rater.proxy") if rater.proxy is not None else model
    psize = model_image_size(proxy) if proxy is not None else 0
    if psize and psize != data.image_size:
        raise ConfigError(f"config 'rater.proxy': proxy '{model_name(proxy)}' works on {psize} px but data.image_size is "
                          f"{data.image_size}; pick a proxy of the data's size")
    strategy = build_strategy(cfg.selection)
    evaluation = eval_config(cfg.eval)
    curation = curation_config(cfg.get("curation"))
    if curation.active and strategy is not None and strategy.name == "curriculum":
        raise ConfigError("config 'curation': curriculum reorders the whole pool each epoch and cannot pick inside curation "
                          "stages; pick another selection (e.g. selection=shift_gauss) or curation=none")
    features = features_config(cfg.get("features"))
    if features.use == "on" and data.style != "map":
        raise ConfigError("config 'features.use=on': the feature cache serves map-style data, but data.style=iterable; "
                          "pass data.style=map or features.use=auto (streams then encode online)")
    captions = captions_config(cfg.get("captions"))
    ratings = Path(cfg.ratings) if cfg.get("ratings") else None
    if curation.active and curation.embeddings.source == "ratings" and ratings is None:
        if strategy is None or strategy.name == "random":
            raise ConfigError("config 'curation.embeddings.source': 'ratings' needs a scored pool, but selection "
                              f"'{strategy.name if strategy else 'none'}' trains no rater; pick a rated selection or ratings=DIR")
        if not (isinstance(rater, RaterConfig) and rater.score.store_embedding):
            raise ConfigError("config 'curation.embeddings.source': 'ratings' reads the pooled features the learned rater's scorer "
                              "writes: pass rater.score.store_embedding=true (a heuristic rater has none: use source=thumbnail)")
    selection_path = Path(cfg.selection_path) if cfg.get("selection_path") else None
    if data.batching == "mixed" and not data.clusters and selection_path is None and not curation.active:
        # (a selection manifest or a curation plan's carries a 'cluster' column; the pipeline hands it to the datamodule)
        raise ConfigError("config 'data.batching': 'mixed' needs cluster ids: pass data.clusters=FILE.parquet (columns key, "
                          "cluster), selection=MANIFEST.parquet with a 'cluster' column, or a curation plan (curation=dedup|dbp)")
    resume = str(cfg.get("resume") or "auto")
    if resume not in Resume.values():
        raise ConfigError(f"config 'resume': got '{resume}', expected one of {', '.join(Resume.values())}")
    data_id = None
    if check_paths:
        from lightning_alchemist.data.sources import data_identity

        data_id = data_identity(data, seed=int(cfg.seed))  # shard paths resolve: a missing dataset fails here, in one line
        if data.clusters and not Path(data.clusters).is_file():
            raise DataError(f"config 'data.clusters': no Parquet file at {data.clusters}; pass a file of key, cluster "
                            "(e.g. a curation selection.parquet) or drop the option")
        if selection_path is not None and not selection_path.is_file():
            raise DataError(f"config 'selection_path': no selection manifest at {selection_path}; "
                            "write one with recipes/select_data.py or drop the option")
        if curation.active and curation.embeddings.source == "sidecar" and not Path(str(curation.embeddings.path)).is_file():
            raise DataError(f"config 'curation.embeddings.path': no embeddings file at {curation.embeddings.path}; "
                            "pass a .npz (keys + array) or .parquet (key + list column)")
        if ratings is not None and not ratings.exists():
            raise DataError(f"config 'ratings': no ratings folder at {ratings}; "
                            "write one with recipes/score.py or drop the option to rate here")
    return Validated(keep=float(keep), seed=int(cfg.seed), out=Path(cfg.out), data=data, model=model, finetune=finetune,
                     rater=rater, rater_proxy=proxy, strategy=strategy, trainer=trainer, eval=evaluation,
                     ratings=ratings, selection_path=selection_path,
                     allow_partial_ratings=bool(cfg.get("allow_partial_ratings", False)), data_id=data_id,
                     curation=curation, features=features, captions=captions, resume=resume)
