"""The ``trainer`` config group: a validated schema and a Lightning ``Trainer`` built from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from lightning_alchemist.config import to_dataclass
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.runtime import set_threads
from lightning_alchemist.callbacks.progress import progress_settings

__all__ = ["TrainerConfig", "trainer_config", "build_trainer"]


@dataclass
class TrainerConfig:
    """Schema of ``trainer``. ``max_samples`` (samples seen) overrides ``max_steps`` when set."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = 1000  # the main job on shapes: 300 steps left the target ignoring its captions (benchmarks/results/demo_alignment.md)
    max_samples: Optional[int] = None
    val_check_interval: Optional[int] = 100
    limit_val_batches: Any = 8
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = 2.0
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    encode_cache_mb: int = 256
    # torch.set_num_threads for every stage of a run, set once at its start: tiny models gain nothing
    # from more, and oversubscribed cores lose a lot; null = torch's default (all cores; GPU runs).
    num_threads: Optional[int] = 1


def trainer_config(node: Any) -> TrainerConfig:
    cfg = to_dataclass(node, TrainerConfig, "trainer")
    if cfg.max_steps <= 0 and not cfg.max_samples:
        raise ConfigError("config 'trainer.max_steps': must be > 0 (or set trainer.max_samples)")
    return cfg


def total_steps(cfg: TrainerConfig, batch_size: int) -> int:
    """Optimiser steps: ``ceil(max_samples / batch_size)`` when ``max_samples`` is set, else ``max_steps``."""
    if cfg.max_samples:
        return max(1, math.ceil(cfg.max_samples / batch_size))
    return cfg.max_steps


def build_trainer(cfg: TrainerConfig, out_dir: str | Path, batch_size: int, name: str = "train",
                  callbacks: Sequence[Any] = (), **overrides: Any) -> Any:
    """A ``lightning.Trainer`` with CSV and TensorBoard loggers under ``out_dir``, a last-step checkpoint and ``callbacks``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    set_threads(cfg.num_threads)
    out = Path(out_dir)
    loggers: list[Any] = [CSVLogger(out, name=name)]
    try:
        loggers.append(TensorBoardLogger(out, name=name, version=loggers[0].version))
    except ModuleNotFoundError:  # tensorboard is optional; CSV always works
        pass
    steps = total_steps(cfg, batch_size)
    show_bar, progress = progress_settings(cfg.enable_progress_bar, name="target")
    callbacks = [*callbacks, *progress]
    if cfg.enable_checkpointing:
        callbacks.append(ModelCheckpoint(dirpath=out / name / "checkpoints", save_last=True, save_top_k=0))
    kwargs = dict(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=cfg.precision, max_steps=steps,
        max_epochs=-1, val_check_interval=min(cfg.val_check_interval, steps) if cfg.val_check_interval else None,
        check_val_every_n_epoch=None if cfg.val_check_interval else 1,
        limit_val_batches=cfg.limit_val_batches, log_every_n_steps=cfg.log_every_n_steps,
        gradient_clip_val=cfg.gradient_clip_val, num_sanity_val_steps=cfg.num_sanity_val_steps,
        enable_progress_bar=show_bar, enable_checkpointing=cfg.enable_checkpointing,
        logger=loggers, callbacks=callbacks, default_root_dir=str(out),
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
