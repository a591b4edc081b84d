"""The ``train`` stage: fit the target model on the pool, through ``DataSelectionCallback`` when a selection is given."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.paths import resume_checkpoint
from lightning_alchemist.runtime import distributed_guard, set_threads
from lightning_alchemist.target.trainer import TrainerConfig

__all__ = ["TargetResult", "model_image_size", "resume_checkpoint", "train_target"]


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
    features: bool = False  # trained from the feature cache


def model_image_size(mcfg: Any) -> int:
    """The image side a model config works on (STAR: its tokenizer's; FLUX: ``model.image_size``; a user's proxy: unknown, 0)."""
    if isinstance(mcfg, dict):
        return 0
    if mcfg.family == "star":
        return int(mcfg.tokenizer.patch_nums[-1] * 2 ** (len(mcfg.tokenizer.ch_mult) - 1))
    return int(getattr(mcfg, "image_size", 0)) or 0


def train_target(model: Any, finetune: Any, trainer: TrainerConfig, datamodule: Any, out: Path, seed: int = 0,
                 selection: Any = None, mode: str = "subset", allow_partial_ratings: bool = False,
                 features: Any = None, resume: str = "auto") -> TargetResult:
    """Fit the target model on ``datamodule`` under ``out/train``; validate on the clean held-out split.

    Args:
        model, finetune: the target's model and fine-tuning configs (validated dataclasses or nodes).
        trainer: the trainer config; its length (``max_steps`` or ``max_samples``) does not depend on
            ``keep``, so runs at different ``keep`` compare at equal compute.
        datamodule: a :class:`~lightning_alchemist.data.datamodule.T2IDataModule` (built once by the caller).
        selection: a :class:`Selection` or a ``selection.parquet``: the training dataloader sees only the selected samples
            (``mode="subset"``) or draws ∝ their weights (``"weighted"``), through :class:`DataSelectionCallback`.
        allow_partial_ratings: accept a selection drawn from ratings that miss part of the pool.
        features: a :class:`~lightning_alchemist.features.store.FeatureStore` of the target's frozen encoders over this
            data: training and validation read it (the same batches, no decoding, no encoder forward); ignored when
            its encoders differ from the target's.
        resume: ``auto`` continues from ``out/train/checkpoints/last.ckpt`` when an interrupted run left one there
            (same data order: the selection callback and the datamodule restore their sampler positions);
            ``never`` deletes those checkpoints and starts from step 0.
    """
    import lightning as L

    from lightning_alchemist.callbacks.data_selection import DataSelectionCallback
    from lightning_alchemist.features.dataset import use_features
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.target.module import T2IModule
    from lightning_alchemist.target.trainer import build_trainer

    set_threads(trainer.num_threads)
    L.seed_everything(seed, workers=True, verbose=False)
    # STAR's tokenizer fits the run's pool (trained once, cached by the data's identity), not shapes.
    module = T2IModule(fit_to_data(model, datamodule.cfg), finetune, seed=seed, encode_cache_mb=trainer.encode_cache_mb)
    callbacks = []
    select_cb = None
    if selection is not None:
        dcfg = datamodule.cfg
        select_cb = DataSelectionCallback(selection if not isinstance(selection, Path) else str(selection), mode=mode, seed=seed,
                                          allow_partial_ratings=allow_partial_ratings, batching=str(dcfg.batching),
                                          clusters=getattr(datamodule, "clusters", None))
        callbacks.append(select_cb)
    batch_size = datamodule.cfg.batch_size
    ckpt_dir = Path(out) / "train" / "checkpoints"
    start = resume_checkpoint(ckpt_dir, resume) if trainer.enable_checkpointing else None
    fit = build_trainer(trainer, out, batch_size=batch_size, callbacks=callbacks)
    if start is not None and fit.is_global_zero:
        print(f"resuming target training from {start} (resume=auto; resume=never starts over)", flush=True)
    t0 = time.time()
    with distributed_guard("target training", int(fit.world_size)), \
            use_features(datamodule, features, module.proxy, stage="train") as cached:
        fit.fit(module, datamodule=datamodule, ckpt_path=str(start) if start is not None else None)
        seconds = time.time() - t0
        ckpt = ckpt_dir / "last.ckpt"
        if trainer.enable_checkpointing:
            fit.save_checkpoint(str(ckpt))  # the final weights (the periodic checkpoint may be some steps older)
        val = fit.validate(module, datamodule=datamodule, verbose=False)
    val_loss = float(val[0]["val/loss"]) if val else float("nan")
    log_dir = fit.loggers[0].log_dir if fit.loggers else str(out)
    return TargetResult(
        module=module, datamodule=datamodule, val_loss=val_loss, steps=int(fit.global_step),
        samples_seen=int(fit.global_step) * batch_size * max(int(fit.world_size), 1), seconds=seconds,
        log_dir=str(log_dir), checkpoint=str(ckpt) if ckpt.exists() else None,
        selection_stats=dict(select_cb.stats) if select_cb is not None else {},
        is_global_zero=bool(fit.is_global_zero), features=bool(cached),
    )
