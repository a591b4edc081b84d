"""Caption variants at equal compute: the target trained on the original captions vs on a mix with template rewrites.

    python benchmarks/captions.py                        # shapes, captions=none vs captions=templates, 2 seeds
    python benchmarks/captions.py --seeds 0 trainer.max_steps=200

Each run trains the target (``model=star_tiny``) on the whole pool for the same number of steps; only the captions
it trains on differ. Reported: the loss on the clean validation split with its original captions, and with each
validation caption replaced by a template rewrite (the same scene said another way: a paraphrase-robustness
check), mean ± std over seeds, and the share of each caption source the run trained on.
Writes ``benchmarks/results/captions.{md,json}`` (or ``--out``). Extra arguments are Hydra overrides.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Optional
from results_io import command, machine, save

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--options", nargs="+", default=["none", "templates"], help="captions= options to compare")
    p.add_argument("--work", default=str(ROOT / "outputs" / "captions_bench"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    return p.parse_args(argv)


def val_losses(module: Any, dm: Any, batches: int) -> dict[str, float]:
    """Validation loss with the original captions and with template rewrites of them (same images, same noise)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_alchemist.curation.captions import TemplateRewriter
    from lightning_alchemist.data.sample import collate_samples

    rewriter = TemplateRewriter()

    def rewritten(samples: list) -> dict:
        batch = collate_samples(samples)
        batch["caption"] = [rewriter.rewrite(c, k, 0) or c for k, c in zip(batch["key"], batch["caption"])]
        return batch

    out = {}
    for name, collate in (("original", collate_samples), ("rewritten", rewritten)):
        loader = DataLoader(dm.val, batch_size=dm.cfg.batch_size, shuffle=False, collate_fn=collate)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=batches)
        out[name] = float(trainer.validate(module, dataloaders=loader, verbose=False)[0]["val/loss"])
    return out


def run_one(option: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.curation.captions import CaptionChooser, CaptionTable, build_caption_variants
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.schema import validate
    from lightning_alchemist.target.train import train_target

    work = Path(args.work)
    cfg = check_overrides("config", [f"out={work}", "keep=1.0", f"seed={seed}", f"captions={option}",
                                     "trainer.enable_progress_bar=false", *args.overrides], ROOT / "conf")
    v = validate(cfg)
    dm = build_datamodule(v.data, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    chooser = None
    if v.captions.enabled:
        folder = work / "sidecar" / option
        if v.captions.sources():
            build_caption_variants(dm.pool, v.captions, folder, data_cfg=v.data)
        chooser = CaptionChooser(v.captions, CaptionTable.read(folder) if v.captions.sources() else None, seed=seed)
    dm.use_captions(chooser)
    t0 = time.time()
    result = train_target(v.model, v.finetune, v.trainer, dm, work / f"{option}_seed{seed}", seed=seed)
    losses = val_losses(result.module, dm, int(v.trainer.limit_val_batches or 8))
    return {"option": option, "seed": seed, "steps": result.steps, "seconds": round(time.time() - t0, 1),
            "val_loss": losses["original"], "val_loss_rewritten": losses["rewritten"],
            "trained_on": chooser.shares() if chooser is not None else {"original": 1.0}}


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def render(r: dict[str, Any]) -> str:
    lines = [f"# Caption variants at equal compute ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {r['machine']})",
             "", f"Command: `{r['command']}`", "",
             f"Target `star_tiny` on the whole shapes pool, {r['runs'][0]['steps']} steps; validation loss on the clean "
             "held-out split with its original captions and with template rewrites of them (mean ± std over seeds):", "",
             "| captions | val_loss (original captions) | val_loss (rewritten captions) | gap | trained on |",
             "|---|---:|---:|---:|---|"]
    by: dict[str, list[dict[str, Any]]] = {}
    for run in r["runs"]:
        by.setdefault(run["option"], []).append(run)
    for option, runs in by.items():
        gap = [x["val_loss_rewritten"] - x["val_loss"] for x in runs]
        shares = runs[0]["trained_on"]
        trained = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if k != "truncated" or v)
        lines.append(f"| {option} | {mean_std([x['val_loss'] for x in runs])} | "
                     f"{mean_std([x['val_loss_rewritten'] for x in runs])} | {mean_std(gap)} | {trained} |")
    lines += ["", "Per run:", "", "| captions | seed | val_loss | val_loss rewritten | seconds |", "|---|---:|---:|---:|---:|"]
    for run in r["runs"]:
        lines.append(f"| {run['option']} | {run['seed']} | {run['val_loss']:.4f} | {run['val_loss_rewritten']:.4f} | "
                     f"{run['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {"runs": []}
    for seed in args.seeds:
        for option in args.options:
            run = run_one(option, seed, args)
            results["runs"].append(run)
            print("run", run, flush=True)
    results["command"], results["machine"] = command("captions.py", argv), machine()
    save(args.out, "captions", render(results), results)
    return results


if __name__ == "__main__":
    main()
