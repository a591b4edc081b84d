"""Why the default main job's target does or does not follow its captions on ``shapes``.

Two measurements (both seeded, one torch thread; wall and CPU seconds reported, since the machine is shared):

- ``ceiling``: train the tiny multi-scale VQ tokenizer of a given shape (``--tok key=value ...``) on
  the same 4000 ``shapes`` pool images the pipeline fits it on, then judge its reconstructions of the
  evaluation prompts' clean renders: the ``alignment_ceiling`` a STAR target built on it can reach.
- ``judge``: the judge on clean renders of the evaluation prompts (``alignment_reference``).

Usage::

    python benchmarks/demo_alignment.py ceiling --tok train_steps=400
    python benchmarks/demo_alignment.py ceiling --tok ch_mult=[1,2,2] patch_nums=[1,2,3,4,6,8] train_steps=800

Prints one JSON line per run; the figures are in ``benchmarks/results/demo_alignment.md``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _parse(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _eval_renders(num_prompts: int = 256):
    from lightning_alchemist.config import data_config
    from lightning_alchemist.metrics.evaluate import EvalConfig, _judge_for, prompt_set

    data = data_config({"name": "shapes"})
    ecfg = EvalConfig(num_prompts=num_prompts)
    prompts, scenes = prompt_set(data, ecfg)
    judge, stats = _judge_for(data, ecfg)
    from lightning_alchemist.metrics.judge import render_batch

    return judge, scenes, render_batch(scenes, judge.cfg), stats


def ceiling(tok: dict, num_prompts: int) -> dict:
    from lightning_alchemist.metrics.judge import alignment_report
    from lightning_alchemist.proxy.star.tokenizer import VQConfig
    from lightning_alchemist.proxy.star.train_vq import shapes_images, train_tokenizer

    cfg = VQConfig(**tok)
    side = int(cfg.patch_nums[-1] * 2 ** (len(cfg.ch_mult) - 1))
    images = shapes_images(cfg.train_samples, side, seed=cfg.seed)
    t0, c0 = time.time(), time.process_time()
    model, stats = train_tokenizer(cfg, images, progress=False)
    wall, cpu = time.time() - t0, time.process_time() - c0
    judge, scenes, renders, _ = _eval_renders(num_prompts)
    with torch.no_grad():
        rec = model.fhat_to_img(model.quantize.idx_to_fhat(model.img_to_idx(renders))).clamp(-1, 1)
    rep = alignment_report(judge, rec, scenes)
    return {"what": "ceiling", "tok": tok, "tokens": sum(p * p for p in cfg.patch_nums), "train_wall_s": round(wall, 1),
            "train_cpu_s": round(cpu, 1), "eval_rec_mse": round(stats["eval_rec_mse"], 4), "codes_used": stats["codes_used"],
            **{k: round(v, 4) for k, v in rep.items()}}


def target(overrides: list[str], eval_at: list[int], selection: str, num_prompts: int, cfg_scales: list[float],
           schedules: list[str]) -> None:
    """Train the target of the composed config (``recipes/train.py``'s overrides) on a given selection; print
    alignment (and its breakdown) at each step of ``eval_at`` for each CFG scale, with wall and CPU seconds."""
    from pathlib import Path
    import tempfile

    import lightning as L

    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.metrics.evaluate import generate_images
    from lightning_alchemist.metrics.judge import alignment_report
    from lightning_alchemist.schema import validate
    from lightning_alchemist.target.train import train_target

    root = Path(__file__).resolve().parents[1]
    steps = max(eval_at)
    cfg = check_overrides("config", [*overrides, f"trainer.max_steps={steps}", "trainer.val_check_interval=null",
                                     "trainer.enable_progress_bar=false"], root / "conf")
    v = validate(cfg)
    dm = build_datamodule(v.data, seed=v.seed)
    dm.prepare_data()
    dm.setup("fit")
    judge, scenes, _, _ = _eval_renders(num_prompts)
    from lightning_alchemist.data.shapes import caption_of

    prompts = [caption_of(s) for s in scenes]
    t0, c0 = time.time(), time.process_time()
    spent = [0.0, 0.0]

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):  # noqa: D102
            step = trainer.global_step
            if step not in eval_at:
                return
            e0, ec0 = time.time(), time.process_time()
            for scale, schedule in [(c, s) for c in cfg_scales for s in schedules]:
                imgs = torch.cat([module.generate(prompts[i:i + 64], seed=i // 64, cfg_scale=scale, cfg_schedule=schedule).float().cpu()
                                  for i in range(0, len(prompts), 64)]).clamp(-1, 1)
                rep = alignment_report(judge, imgs, scenes)
                print(json.dumps({"what": "target", "step": step, "cfg_scale": scale, "schedule": schedule, "loss": round(float(outputs["loss"]), 4),
                                  "train_wall_s": round(time.time() - t0 - spent[0], 1),
                                  "train_cpu_s": round(time.process_time() - c0 - spent[1], 1),
                                  **{k: round(val, 4) for k, val in rep.items()}}), flush=True)
            spent[0] += time.time() - e0
            spent[1] += time.process_time() - ec0

    from lightning_alchemist.target import trainer as trainer_mod

    saved = trainer_mod.build_trainer  # train_target imports it at call time: add the probe to its callbacks

    def build(*a, callbacks=(), **k):
        return saved(*a, callbacks=[*callbacks, Probe()], **k)

    trainer_mod.build_trainer = build
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train_target(v.model, v.finetune, v.trainer, dm, Path(tmp), seed=v.seed, selection=Path(selection) if selection else None)
    finally:
        trainer_mod.build_trainer = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["ceiling", "judge", "target"])
    ap.add_argument("--set", nargs="*", default=[], help="target: recipes/train.py overrides")
    ap.add_argument("--eval-at", nargs="*", type=int, default=[300])
    ap.add_argument("--cfg", nargs="*", type=float, default=[2.0], help="target: CFG scales to sample with")
    ap.add_argument("--schedule", nargs="*", default=["linear"], help="target: CFG schedules (linear, constant)")
    ap.add_argument("--selection", default="", help="target: a selection.parquet to train on (empty: the whole pool)")
    ap.add_argument("--tok", nargs="*", default=[], help="VQConfig overrides key=value (YAML values)")
    ap.add_argument("--prompts", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.what == "target":
        target(args.set, args.eval_at, args.selection, args.prompts, args.cfg, args.schedule)
    elif args.what == "ceiling":
        print(json.dumps(ceiling(_parse(args.tok), args.prompts)), flush=True)
    else:
        from lightning_alchemist.metrics.judge import alignment_report

        judge, scenes, renders, stats = _eval_renders(args.prompts)
        rep = alignment_report(judge, renders, scenes)
        print(json.dumps({"what": "judge", "heldout": stats["heldout"], **{k: round(v, 4) for k, v in rep.items()}}), flush=True)


if __name__ == "__main__":
    main()
