"""The ``train_rater`` and ``score`` stages as library calls (the recipes are thin wrappers).

- :func:`run_train_rater`: data + the rater's proxy (``rater.proxy``, a ``conf/model`` entry) ->
  ``OUT/rater.ckpt`` (plus per-epoch checkpoints and CSV/TensorBoard logs under ``OUT/rater_logs``).
- :func:`run_score`: data + ``rater=PATH/rater.ckpt`` -> ``OUT/ratings/<shard>.parquet``.
  Multi-device: ``trainer.devices=N trainer.strategy=ddp``; multi-node: launch one process per
  device with ``srun`` (SLURM) or ``torchrun --nnodes M --nproc-per-node N`` and pass
  ``trainer.num_nodes=M trainer.devices=N``; Lightning reads the cluster environment.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.errors import ConfigError

__all__ = [
    "ScoreRecipeConfig",
    "build_rater_proxy",
    "proxy_model_config",
    "rater_path_override",
    "run_score",
    "run_train_rater",
]

log = logging.getLogger(__name__)


def _container(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return dataclasses.asdict(node)
    return node


def proxy_model_config(rater_proxy: Optional[str], root_model: Any = None) -> dict:
    """The proxy's ``model`` node: ``conf/model/<rater_proxy>.yaml``, or the root ``model`` node if unset."""
    if not rater_proxy:
        if root_model is None:
            raise ConfigError("config 'rater.proxy' is null and no 'model' is set: pass rater.proxy=star_tiny (a conf/model entry)")
        return dict(_container(root_model))
    from omegaconf import OmegaConf

    from lightning_alchemist.cli import CONF_DIR

    path = CONF_DIR / "model" / f"{rater_proxy}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")) if (CONF_DIR / "model").is_dir() else []
        raise ConfigError(f"config 'rater.proxy': no proxy config '{path}'; choose one of {have or 'conf/model/*.yaml'}")
    return dict(_container(OmegaConf.load(path)))


def build_rater_proxy(model_cfg: dict) -> Any:
    """Build the proxy from its model node (package factory, or ``class``/``kwargs`` for a user's proxy)."""
    from lightning_alchemist.rater.scoring import build_proxy_from_spec

    return build_proxy_from_spec({"model": model_cfg, "finetune": None})


# Trainer arguments a rater/scoring run takes from a ``trainer`` node: where and how to run, not
# how long (the target-model trainer group's max_steps etc. must not cut rater training short).
_DEVICE_KEYS = ("accelerator", "devices", "strategy", "num_nodes", "precision", "enable_progress_bar", "log_every_n_steps",
                "limit_train_batches", "limit_predict_batches", "max_epochs")


def _trainer_kwargs(node: Any, defaults: dict) -> dict:
    extra = _container(node) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"config 'trainer': expected a mapping of Lightning Trainer arguments, got {type(extra).__name__}")
    threads = extra.get("num_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return {**defaults, **{k: v for k, v in extra.items() if k in _DEVICE_KEYS and v is not None}}


def _multi_process(kwargs: dict) -> bool:
    devices, nodes = kwargs.get("devices", 1), int(kwargs.get("num_nodes", 1) or 1)
    many = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    return many or nodes > 1


def run_train_rater(cfg: Any) -> Path:
    """Train the rater with its proxy on ``cfg.data``; returns ``OUT/rater.ckpt``."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.rater.config import rater_config
    from lightning_alchemist.rater.data import RaterDataModule
    from lightning_alchemist.rater.module import RaterModule, infer_rater_dims

    rcfg = rater_config(cfg.rater)
    seed = int(cfg.get("seed", 0) or 0) + rcfg.seed
    pl.seed_everything(seed, workers=True)
    out = Path(cfg.out)
    model_cfg = proxy_model_config(rcfg.proxy, cfg.get("model"))
    model_cfg = fit_to_data(model_cfg, cfg.data)  # the proxy's tokenizer fits this pool (not shapes), cached
    proxy = build_rater_proxy(model_cfg)
    data = RaterDataModule(build_datamodule(cfg.data, seed=int(cfg.get("seed", 0) or 0)), seed=seed)
    token_dim, text_dim = infer_rater_dims(proxy, data.first_val_batch())
    module = RaterModule(proxy, token_dim, text_dim, rcfg, proxy_spec={"model": model_cfg, "finetune": None})
    logs = out / "rater_logs"
    kwargs = _trainer_kwargs(
        cfg.get("trainer"),
        {"max_epochs": rcfg.epochs, "accelerator": "auto", "devices": 1, "log_every_n_steps": 10},
    )
    if rcfg.steps_per_epoch:
        # An epoch is a pass over the validation loader, cut to steps_per_epoch batches (the lr and
        # alpha schedules follow the shorter epoch: Lightning's num_training_batches).
        kwargs["limit_train_batches"] = int(rcfg.steps_per_epoch)
    if _multi_process(kwargs) and kwargs.get("strategy") in (None, "auto", "ddp"):
        # Not every parameter gets a gradient every step (group head off, no scale levels, frozen
        # proxy), so DDP must look for unused parameters.
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    trainer = pl.Trainer(
        logger=[CSVLogger(str(logs), name=""), TensorBoardLogger(str(logs), name="tb")],
        callbacks=[ModelCheckpoint(dirpath=str(out / "rater_checkpoints"), filename="epoch{epoch:02d}", save_top_k=-1,
                                   every_n_epochs=1, auto_insert_metric_name=False)],
        **kwargs,
    )
    trainer.fit(module, datamodule=data)
    path = out / "rater.ckpt"
    trainer.save_checkpoint(str(path))
    if trainer.is_global_zero:
        print(f"rater trained ({rcfg.meta_gradient}, {rcfg.epochs} epochs) -> {path}")
    return path


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
    data: Any = None
    trainer: dict[str, Any] = field(default_factory=dict)


def run_score(cfg: Any) -> dict[str, Any]:
    """Score every pool sample of ``cfg.data`` with ``cfg.rater`` into ``OUT/ratings``."""
    from lightning_alchemist.config import to_dataclass
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.rater.scoring import load_rater, score

    node = _container(cfg)
    node = {k: v for k, v in node.items() if k in {f.name for f in dataclasses.fields(ScoreRecipeConfig)}}
    conf = to_dataclass(node, ScoreRecipeConfig, "score")
    if not conf.rater_ckpt:
        raise ConfigError("config 'rater' is required: pass rater=DIR/rater.ckpt (written by recipes/train_rater.py)")
    rater = load_rater(conf.rater_ckpt)
    dm = build_datamodule(conf.data, seed=conf.seed)
    ratings_dir = Path(conf.out) / "ratings"
    info = score(rater, dm, ratings_dir, trainer_kwargs=_trainer_kwargs(conf.trainer, {}), overwrite=conf.overwrite)
    print(
        f"scored {info['rows']} samples into {len(info['written_shards'])} shard files "
        f"(skipped {len(info['skipped_shards'])} finished) -> {ratings_dir} [fingerprint {info['fingerprint']}]"
    )
    return info
