"""Train a target text-to-image model (STAR or FLUX proxy family) on a dataset with Lightning.

    python recipes/train.py model=star_tiny keep=1.0
    python recipes/train.py model=flux_tiny finetune=lora trainer.max_steps=200

For now it trains on the whole pool (``keep`` is recorded; selection is wired in by the pipeline
later). Logs go to ``<run dir>/train/version_N`` (CSV and TensorBoard) and the last checkpoint to
``<run dir>/train/checkpoints/last.ckpt``, where the run dir is Hydra's (``<out>/runs/<time>``, or
``<out>/multirun/<time>/<job>`` in a ``-m`` sweep), or ``out`` when called as a library.
"""

from __future__ import annotations

import os
import sys

# Python puts this script's folder first on sys.path; a sibling recipe named like a stdlib module
# (recipes/select.py vs `select`) would then shadow it. Recipes import the package, not siblings.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import logging
import time
from pathlib import Path
from typing import Any

from lightning_alchemist.cli import hydra_main

log = logging.getLogger("lightning_alchemist.train")


def train(cfg: Any) -> dict[str, Any]:
    """Build data, proxy and trainer from ``cfg``; fit; return the final validation loss and paths."""
    import lightning as L
    import torch

    from lightning_alchemist.config import data_config
    from lightning_alchemist.errors import ConfigError
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.proxy.factory import model_config
    from lightning_alchemist.proxy.lora import finetune_config
    from lightning_alchemist.proxy.module import T2IModule
    from lightning_alchemist.proxy.training import build_trainer, trainer_config

    mcfg = model_config(cfg.model)  # validate every group first: a bad value fails in a second, not after data prep
    finetune_config(cfg.finetune)
    tcfg = trainer_config(cfg.trainer)
    data = data_config(cfg.data)
    size = model_image_size(mcfg)
    if size != data.image_size:
        raise ConfigError(f"config 'data.image_size': {data.image_size} px, but model '{mcfg.name}' works on {size} px; "
                          f"pass data.image_size={size}")
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if float(cfg.keep) < 1.0:
        log.warning("keep=%s: data selection is not wired into this recipe yet; training on the whole pool", cfg.keep)
    dm = build_datamodule(data, seed=cfg.seed)
    module = T2IModule(cfg.model, cfg.finetune, seed=cfg.seed, encode_cache_mb=tcfg.encode_cache_mb)
    out = run_dir(cfg)
    trainer = build_trainer(tcfg, out, batch_size=data.batch_size)
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    seconds = time.time() - t0
    val = trainer.validate(module, datamodule=dm, verbose=False)
    val_loss = float(val[0]["val/loss"]) if val else float("nan")
    log_dir = trainer.loggers[0].log_dir if trainer.loggers else str(out)
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    print(f"final val/loss {val_loss:.4f} after {trainer.global_step} steps ({seconds:.0f} s); "
          f"logs: {log_dir}; checkpoint: {ckpt if ckpt.exists() else 'none'}")
    return {"val_loss": val_loss, "steps": trainer.global_step, "log_dir": log_dir, "checkpoint": str(ckpt), "seconds": seconds}


def run_dir(cfg: Any) -> Path:
    """This job's folder: Hydra's run/sweep dir (under ``out``, one per job of a ``-m`` sweep), else ``out``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # not inside a Hydra job (library use, tests)
        return Path(cfg.out)


def model_image_size(mcfg: Any) -> int:
    """The image side a model config works on (STAR: its tokenizer's; FLUX: ``model.image_size``)."""
    if mcfg.family == "star":
        return int(mcfg.tokenizer.patch_nums[-1] * 2 ** (len(mcfg.tokenizer.ch_mult) - 1))
    return int(getattr(mcfg, "image_size", 0)) or 0


@hydra_main("config")
def main(cfg: Any) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
