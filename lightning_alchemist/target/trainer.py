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

__all__ = ["TrainerConfig", "build_trainer", "periodic_checkpoint", "trainer_config"]


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
    # A resumable ``last.ckpt`` (plus the latest ``keep_checkpoints``) every this many optimiser steps;
    # null: every ``checkpoint_every_minutes`` of training instead (a few minutes of work on any model).
    checkpoint_every_n_steps: Optional[int] = None
    checkpoint_every_minutes: float = 5.0
    keep_checkpoints: int = 2
    encode_cache_mb: int = 256
    # torch.set_num_threads for every stage of a run, set once at its start: tiny models gain nothing
    # from more, and oversubscribed cores lose a lot; null = torch's default (all cores; GPU runs).
    num_threads: Optional[int] = 1


def trainer_config(node: Any) -> TrainerConfig:
    cfg = to_dataclass(node, TrainerConfig, "trainer")
    if cfg.max_steps <= 0 and not cfg.max_samples:
        raise ConfigError("config 'trainer.max_steps': must be > 0 (or set trainer.max_samples)")
    if cfg.checkpoint_every_n_steps is not None and cfg.checkpoint_every_n_steps < 1:
        raise ConfigError(f"config 'trainer.checkpoint_every_n_steps': got {cfg.checkpoint_every_n_steps}, expected >= 1 "
                          "(or null to checkpoint every trainer.checkpoint_every_minutes)")
    if cfg.checkpoint_every_minutes <= 0:
        raise ConfigError(f"config 'trainer.checkpoint_every_minutes': got {cfg.checkpoint_every_minutes}, expected > 0")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"config 'trainer.keep_checkpoints': got {cfg.keep_checkpoints}, expected >= 1")
    return cfg


def total_steps(cfg: TrainerConfig, batch_size: int) -> int:
    """Optimiser steps: ``ceil(max_samples / batch_size)`` when ``max_samples`` is set, else ``max_steps``."""
    if cfg.max_samples:
        return max(1, math.ceil(cfg.max_samples / batch_size))
    return cfg.max_steps


def periodic_checkpoint(dirpath: str | Path, every_n_steps: Optional[int] = None, every_minutes: Optional[float] = None,
                        keep: int = 2, filename: str = "step{step:06d}") -> Any:
    """A ``ModelCheckpoint`` writing ``last.ckpt`` (what a rerun resumes from) and keeping the latest ``keep`` step
    checkpoints, every ``every_n_steps`` optimiser steps or, when that is None, every ``every_minutes`` of training."""
    from datetime import timedelta

    from lightning.pytorch.callbacks import ModelCheckpoint

    if int(keep) < 1:
        raise ConfigError(f"keep_checkpoints: got {keep}, expected at least 1 (the latest checkpoints kept)")
    when: dict[str, Any] = ({"every_n_train_steps": int(every_n_steps)} if every_n_steps
                            else {"train_time_interval": timedelta(minutes=float(every_minutes or 5.0))})
    # "step" is always a monitor candidate: the top-k by step are the latest k. Nothing at epoch or validation
    # ends: the cadence is the steps (or minutes) alone, so a checkpoint's cost is predictable.
    return ModelCheckpoint(dirpath=str(dirpath), filename=filename, monitor="step", mode="max", save_top_k=int(keep),
                           save_last=True, auto_insert_metric_name=False, save_on_train_epoch_end=False, **when)


def build_trainer(cfg: TrainerConfig, out_dir: str | Path, batch_size: int, name: str = "train",
                  callbacks: Sequence[Any] = (), **overrides: Any) -> Any:
    """A ``lightning.Trainer`` with CSV and TensorBoard loggers under ``out_dir``, periodic resumable checkpoints
    (:func:`periodic_checkpoint`, under ``out_dir/name/checkpoints``) and ``callbacks``."""
    import lightning as L
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
        callbacks.append(periodic_checkpoint(out / name / "checkpoints", cfg.checkpoint_every_n_steps, cfg.checkpoint_every_minutes,
                                             cfg.keep_checkpoints))
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
