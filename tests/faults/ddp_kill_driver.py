"""Target training under Lightning DDP (2 CPU processes, gloo) for the fault suite: ``KILL_RANK=R KILL_AT=S`` makes
rank R SIGKILL itself as it starts step S+1. Lightning re-runs this script for rank 1 (env LOCAL_RANK=1).

    python ddp_kill_driver.py OUT

Exits 2 with one ``error: ...`` line when a peer is lost (what the recipes do), 0 after training.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


DATA = {"name": "shapes", "image_size": 32, "batch_size": 8, "num_workers": 0,
        "shapes": {"num_pool": 200, "num_val": 100, "shard_size": 100}}
MODEL = {"family": "star", "tokenizer": {"auto_train": False}}


def main(out: Path) -> None:
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(1)
    import lightning_alchemist.target.trainer as trainer_module
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.errors import AlchemistError
    from lightning_alchemist.target.train import train_target
    from lightning_alchemist.target.trainer import TrainerConfig

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    kill_rank, kill_at = os.environ.get("KILL_RANK"), os.environ.get("KILL_AT")

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if kill_rank is not None and rank == int(kill_rank) and trainer.global_step >= int(kill_at):
                print(f"rank {rank}: killed at step {trainer.global_step}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    original = trainer_module.build_trainer
    trainer_module.build_trainer = lambda *a, callbacks=(), **k: original(*a, callbacks=[*callbacks, Kill()], **k)
    cfg = TrainerConfig(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, val_check_interval=None, limit_val_batches=1,
                        enable_progress_bar=False, checkpoint_every_n_steps=2, log_every_n_steps=1)
    dm = build_datamodule(DATA, seed=0)
    try:
        result = train_target(MODEL, {"mode": "full", "lr": 3e-3, "warmup_steps": 2}, cfg, dm, out, seed=0)
    except AlchemistError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if result.is_global_zero:
        print(f"DDP DONE steps={result.steps}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
