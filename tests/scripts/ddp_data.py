"""Run by tests/test_datamodule.py: Lightning DDP (2 CPU processes, gloo) over the datamodule.

Each rank records the pool keys it trains on (one epoch) and predicts (scoring loader) into
``OUT/rank{r}.json``.
"""

from __future__ import annotations

import json
import sys

import lightning as L
import torch

from lightning_alchemist.data.datamodule import T2IDataModule


class Recorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.train_keys: list[str] = []
        self.predict_keys: list[str] = []

    def training_step(self, batch, batch_idx):
        self.train_keys.extend(batch["key"])
        return (self.weight * batch["image"].mean()).sum()

    def predict_step(self, batch, batch_idx):
        self.predict_keys.extend(batch["key"])
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(cfg_json: str, out: str) -> None:
    cfg = json.loads(cfg_json)
    dm = T2IDataModule(cfg)
    model = Recorder()
    common = dict(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    L.Trainer(max_epochs=1, **common).fit(model, datamodule=dm)
    L.Trainer(**common).predict(model, datamodule=dm, return_predictions=False)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"train": model.train_keys, "predict": model.predict_keys, "pool": dm.pool.keys}, fh)
    if torch.distributed.is_initialized():  # join gloo's threads now: one left to interpreter teardown can abort the exit
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
