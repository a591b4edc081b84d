"""The ``train`` stage: fit the target model on the pool, through ``DataSelectionCallback`` when a selection is given."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.errors import ConfigError

__all__ = ["TargetResult", "model_image_size", "train_target"]


@dataclass
class TargetResult:
    """The trained target and where its logs and checkpoint went."""

    module: Any
    datamodule: Any
    val_loss: float
    steps: int
    samples_seen: int
    seconds: float
    log_dir: str
    checkpoint: Optional[str]
    selection_stats: dict[str, Any]
    is_global_zero: bool = True


def model_image_size(mcfg: Any) -> int:
    """The image side a model config works on (STAR: its tokenizer's; FLUX: ``model.image_size``)."""
    if mcfg.family == "star":
        return int(mcfg.tokenizer.patch_nums[-1] * 2 ** (len(mcfg.tokenizer.ch_mult) - 1))
    return int(getattr(mcfg, "image_size", 0)) or 0


def check_groups(cfg: Any) -> tuple[Any, Any, Any]:
    """Validate the target's groups (model, finetune, trainer, data) before any slow work; returns (model, trainer, data) configs."""
    from lightning_alchemist.config import data_config
    from lightning_alchemist.proxy.factory import model_config
    from lightning_alchemist.proxy.lora import finetune_config
    from lightning_alchemist.proxy.training import trainer_config

    mcfg = model_config(cfg.model)
    finetune_config(cfg.finetune)
    tcfg = trainer_config(cfg.trainer)
    data = data_config(cfg.data)
    size = model_image_size(mcfg)
    if size and size != data.image_size:
        raise ConfigError(f"config 'data.image_size': {data.image_size} px, but model '{mcfg.name}' works on {size} px; "
                          f"pass data.image_size={size}")
    return mcfg, tcfg, data


def train_target(cfg: Any, out: Path, selection: Optional[Path] = None, mode: str = "subset",
                 datamodule: Any = None) -> TargetResult:
    """Build data, target model and trainer from ``cfg``; fit under ``out/train``; validate on the clean held-out split.

    With ``selection`` (a ``selection.parquet``) the training dataloader sees only the selected
    samples (``mode="subset"``) or draws ∝ their weights (``"weighted"``); the training length
    (``trainer.max_steps`` or ``trainer.max_samples``) does not depend on ``keep``, so runs at
    different ``keep`` compare at equal compute. ``datamodule``: one already built from ``cfg.data``.
    """
    import lightning as L
    import torch

    from lightning_alchemist.callbacks.data_selection import DataSelectionCallback
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.proxy.module import T2IModule
    from lightning_alchemist.proxy.training import build_trainer

    _, tcfg, data = check_groups(cfg)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = datamodule if datamodule is not None else build_datamodule(data, seed=cfg.seed)
    module = T2IModule(fit_to_data(cfg.model, data), cfg.finetune, seed=cfg.seed, encode_cache_mb=tcfg.encode_cache_mb)
    callbacks = []
    select_cb = None
    if selection is not None:
        select_cb = DataSelectionCallback(str(selection), mode=mode, seed=cfg.seed)
        callbacks.append(select_cb)
    trainer = build_trainer(tcfg, out, batch_size=data.batch_size, callbacks=callbacks)
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    seconds = time.time() - t0
    val = trainer.validate(module, datamodule=dm, verbose=False)
    val_loss = float(val[0]["val/loss"]) if val else float("nan")
    log_dir = trainer.loggers[0].log_dir if trainer.loggers else str(out)
    ckpt = Path(out) / "train" / "checkpoints" / "last.ckpt"
    return TargetResult(
        module=module, datamodule=dm, val_loss=val_loss, steps=int(trainer.global_step),
        samples_seen=int(trainer.global_step) * data.batch_size * max(int(trainer.world_size), 1), seconds=seconds,
        log_dir=str(log_dir), checkpoint=str(ckpt) if ckpt.exists() else None,
        selection_stats=dict(select_cb.stats) if select_cb is not None else {},
        is_global_zero=bool(trainer.is_global_zero),
    )

