"""Runs the small pipeline (rate -> score -> select -> train) and a write-back of its selection, and kills itself
with SIGKILL at one chosen point: the fault suite's subject (tests/faults/test_fault_kill.py).

    python kill_driver.py OUT KILL

KILL: ``none``; ``warmup:STEP`` (as the proxy warm-up starts step STEP); ``target:STEP`` (as target training
starts step STEP+1); ``replace:WHAT:N`` (just before the N-th atomic rename of an artifact WHAT: ``ratings``
(a shard's ratings file), ``selection`` (selection.parquet), ``marker`` (a stage's stage.json), ``pruned`` (a
written-back shard)). A SIGKILL leaves no chance to clean up: what is on disk is what a crash leaves.

Evaluation and the report are left out (they write nothing a rerun depends on). The warm-up's result cache
goes under OUT (the shared cache would hand the second run a finished warm-up); the data, tokenizer and
encodes caches are the shared ones (deterministic, file-locked).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


TOY = [
    "trainer.max_steps=6", "trainer.val_check_interval=6", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "trainer.checkpoint_every_n_steps=2", "data.batch_size=8",
    "data.shapes.num_pool=200", "data.shapes.num_val=100", "data.shapes.shard_size=100", "rater.epochs=1",
    "rater.warmup.steps=12", "rater.warmup.checkpoint_every=4", "rater.contrast_partners=1", "eval.num_prompts=8", "eval.fid_real=64", "eval.val_batches=2",
    # seeded random tokenizers: nothing is trained on first use, whatever the cache holds
    "model.tokenizer.auto_train=false", "rater.proxy.tokenizer.auto_train=false",
]


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(kill: str, out: Path) -> None:
    import lightning_alchemist.rater.warmup as warmup
    import lightning_alchemist.target.trainer as trainer

    warmup.cache_root = lambda: out / "driver_cache"
    kind, _, arg = kill.partition(":")
    if kind == "warmup":
        original_lr = warmup.warmup_lr_factor

        def lr_factor(step, cfg):
            if step == int(arg):
                die()
            return original_lr(step, cfg)

        warmup.warmup_lr_factor = lr_factor
    elif kind == "target":
        import lightning.pytorch as pl

        class Kill(pl.Callback):
            def on_train_batch_start(self, tr, module, batch, batch_idx):
                if tr.global_step >= int(arg):
                    die()

        original_build = trainer.build_trainer

        def build(*args, callbacks=(), **kw):
            return original_build(*args, callbacks=[*callbacks, Kill()], **kw)

        trainer.build_trainer = build
    elif kind == "replace":
        what, _, nth = arg.partition(":")
        match = {"ratings": lambda p: p.parent.name == "ratings" and p.suffix == ".parquet",
                 "selection": lambda p: p.name == "selection.parquet",
                 "marker": lambda p: p.name == "stage.json",
                 "pruned": lambda p: p.suffix == ".tar"}[what]
        seen = {"n": 0}
        original_replace = os.replace

        def replace(src, dst, *a, **k):
            if match(Path(dst)):
                seen["n"] += 1
                if seen["n"] == int(nth):
                    die()
            return original_replace(src, dst, *a, **k)

        os.replace = replace
    elif kind != "none":
        raise SystemExit(f"unknown kill {kill!r}")


def main(out: Path, kill: str) -> None:
    import torch

    torch.set_num_threads(1)
    from helpers import compose

    install(kill, out)
    import lightning_alchemist.pipeline.run as run
    from lightning_alchemist.data.writeback import write_pruned
    from lightning_alchemist.selection import Ratings, Selection

    run._evaluate = lambda v, target, folder: {"val_loss": target.val_loss}
    kept: dict = {}

    def report(folder, **kw):
        kept.update(kw)
        return {"stages": {k: str(s.path) for k, s in kw["stages"].items()}}

    import lightning_alchemist.pipeline.report as report_module

    report_module.write_report = report
    cfg = compose("config", [*TOY, f"out={out}"])
    result = run.run_pipeline(cfg, out)
    stages = result["stages"]
    selection = Selection.read(Path(stages["selection"]) / "selection.parquet")
    ratings = Ratings.read(Path(stages["ratings"]) / "ratings")
    write_pruned(kept["datamodule"], selection, out / "pruned", ratings=ratings, shard_size=20, workers=1)
    print("DRIVER DONE", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
