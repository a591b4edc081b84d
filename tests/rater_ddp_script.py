"""Rater training under DDP on 2 CPU processes (for tests/test_rater_ddp.py).

usage: python tests/rater_ddp_script.py OUT_DIR VARIANT
Each rank saves its final rater and proxy weights to OUT_DIR/rank{r}.pt.
"""

from __future__ import annotations

import os
import sys


import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from rater_toys import ToyProxy, collate, make_samples

from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.module import RaterModule


class Data(pl.LightningDataModule):
    def train_dataloader(self) -> PairedLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        pool, val = make_samples(64, 0.5, 1, "p"), make_samples(32, 0.0, 2, "v")

        def make(samples, seed):
            return DataLoader(samples, batch_size=8, sampler=DistributedSampler(samples, world, rank, seed=seed), collate_fn=collate)

        return PairedLoader(make(pool, 0), make(val, 1))


def main() -> None:
    out, variant = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = RaterModule(ToyProxy(), 48, 16, {"network": {"depth": 1, "width": 32, "heads": 2}, "meta_gradient": variant, "alpha_epoch0": 0.5,
                                         "objective": "official"})
    t = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    t.fit(m, datamodule=Data())
    torch.save({k: v.detach().cpu() for k, v in m.state_dict().items()}, os.path.join(out, f"rank{t.global_rank}.pt"))
    if torch.distributed.is_initialized():  # join gloo's threads now: one left to interpreter teardown can abort the exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
