"""Scoring driver for the subprocess tests (kill-and-resume, DDP on 2 CPU processes).

usage: python tests/scoring_script.py CKPT RATINGS_DIR [--devices N] [--sleep S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


import lightning.pytorch as pl
import torch

from rater_toys import ToyScoreData

from lightning_alchemist.rater.scoring import load_rater, score


class SlowDown(pl.Callback):
    """Sleeps after each batch so a test can kill the run mid-way."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt")
    parser.add_argument("ratings")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rater = load_rater(args.ckpt)
    trainer_kwargs = {"accelerator": "cpu", "devices": args.devices, "enable_progress_bar": False}
    if args.devices > 1:
        trainer_kwargs["strategy"] = "ddp"
    callbacks = [SlowDown(args.sleep)] if args.sleep > 0 else []
    info = score(rater, ToyScoreData(), args.ratings, trainer_kwargs=trainer_kwargs, callbacks=callbacks)
    print(f"rank-done {info['rows']} rows, wrote {len(info['written_shards'])}, skipped {len(info['skipped_shards'])}", flush=True)


if __name__ == "__main__":
    main()
