"""Rater objectives compared on the embedded datasets: does the rating find the bad data?

    python benchmarks/rater_signal.py                                  # shapes + glyphs, seeds 0 1, all variants
    python benchmarks/rater_signal.py --data shapes --pool 5000 --seeds 0 --variants direct-contrast
    python benchmarks/rater_signal.py --quick                          # smoke run: tiny pool, short training

For each dataset and seed it encodes the pool and the (clean) validation split once with the
proxy's frozen tokenizer and text encoder (cached: :mod:`lightning_alchemist.rater.encodes`), warms
the proxy up on the validation split (cached: :mod:`lightning_alchemist.rater.warmup`, 20 % held out
for early stopping) and rates every pool sample with each variant:

- ``official``: the current default rater as the main job trains it (cold proxy, joint meta-training,
  softmax rule + entropy regulariser), scored by the rater network;
- ``direct-<objective>``: the frozen warmed-up proxy scores every sample itself (loss = −ℓ,
  contrast = caption contrast, penalty = ℓ(θ̂) − ℓ with a reference warmed up on the pool);
- ``rater-<objective>``: a rater network regressed onto that signal (amortised), then scoring.

It reports AUC(clean > kind) per defect kind, each kind's kept share at keep 0.5 and 0.2 under
the selection the objective implies (``ShiftGaussian(head="auto")`` reading the declared ranking
ends; top-K and random for reference), the selection's defect share against the pool's, and the
cost (warm-up, rater training, scoring seconds; the load average says how busy the machine was).
Labels (``labels.parquet``) are read for evaluation only. Writes ``benchmarks/results/rater_signal.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("official", "direct-loss", "direct-contrast", "direct-penalty", "rater-regression", "rater-contrast")
# A variant may end in options: ``-p2`` (contrast partners), ``-b2`` (contrast beta), ``-nonull`` (no
# empty-caption partner), ``-e0.25`` (the empty caption's share), ``-nodetail`` / ``-nonoise`` / ``-noempty`` (direct scoring without that image check,
# each on by default), ``-nochecks`` (without any), e.g. ``direct-contrast-p2``.
OBJECTIVE_OF = {"loss": "regression", "contrast": "contrast", "penalty": "penalty", "regression": "regression"}
KEEPS = (0.5, 0.2)
WARMUP_OVERRIDES: dict[str, Any] = {}  # --warmup KEY=VALUE (WarmupConfig fields)
GOALS = "keep 0.5: defect share <= half the pool's; noise/chaotic kept <= 10 %, mismatch <= 25 %, plain <= 25 %, clean >= 75 %"


def setup(data_name: str, pool: int, seed: int, quick: bool, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Data module, proxy (seeded), cached pool/val encodes, labels; ``overrides``: more Hydra overrides
    (e.g. ``rater.proxy.tokenizer.patch_nums=[1,2,3,4,6,8]`` for a finer proxy)."""
    import pyarrow.parquet as pq

    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.config import as_container
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.proxy.factory import fit_to_data
    from lightning_alchemist.rater.encodes import cached_encodes
    from lightning_alchemist.rater.recipe import build_rater_proxy
    from lightning_alchemist.schema import validate

    overrides = [f"data={data_name}", *([f"data.{data_name}.num_pool={pool}"] if pool else []), *overrides]
    cfg = validate(check_overrides("config", overrides, ROOT / "conf"))
    dm = build_datamodule(cfg.data, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    # the rater's proxy (rater.proxy, star_tiny by default) with its tokenizer fitted to this pool, seeded
    model_cfg = {**as_container(fit_to_data(cfg.rater_proxy, cfg.data)), "seed": seed}
    t0 = time.perf_counter()
    proxy = build_rater_proxy(model_cfg)
    build_s = time.perf_counter() - t0
    pool_enc, pool_info = cached_encodes(proxy, dm.pool)
    val_enc, val_info = cached_encodes(proxy, dm.val)
    t = pq.read_table(dm.labels_path)
    labels = dict(zip(t.column("key").to_pylist(), t.column("defect").to_pylist()))
    kinds = np.array([labels.get(k, "?") for k in pool_enc.keys])
    return {"cfg": cfg, "dm": dm, "model_cfg": model_cfg, "proxy": proxy, "pool": pool_enc, "val": val_enc,
            "pool_info": pool_info, "val_info": val_info, "kinds": kinds, "build_s": build_s}


def warm(env: dict, steps: int, seed: int, role: str = "val") -> tuple[Any, dict]:
    """A fresh proxy (the seeded initial weights) warmed up on ``role``'s encodes (cached)."""
    from lightning_alchemist.rater.recipe import build_rater_proxy
    from lightning_alchemist.rater.warmup import WarmupConfig, warm_up_proxy

    proxy = build_rater_proxy(env["model_cfg"])
    data, info = (env["val"], env["val_info"]) if role == "val" else (env["pool"], env["pool_info"])
    wcfg = WarmupConfig(**{"steps": steps, "seed": seed, **WARMUP_OVERRIDES})
    res = warm_up_proxy(proxy, data, wcfg, info["fingerprint"], role=role)
    proxy.eval()
    return proxy, res.as_dict()


def parse_variant(variant: str) -> tuple[str, str, dict]:
    """``(kind, objective name, contrast options)`` of e.g. ``direct-contrast-p2-b2``."""
    parts = variant.split("-")
    opts: dict[str, Any] = {}
    for p in parts[2:]:
        if p.startswith("p"):
            opts["contrast_partners"] = int(p[1:])
        elif p.startswith("b"):
            opts["contrast_beta"] = float(p[1:])
        elif p == "nonull":
            opts["contrast_null"] = 0.0
        elif p.startswith("e") and p[1:].replace(".", "", 1).isdigit():
            opts["contrast_null"] = float(p[1:])
        elif p in ("nodetail", "nonoise", "noempty"):
            opts[f"{p[2:]}_weight"] = 0.0
        elif p == "nochecks":
            opts.update(detail_weight=0.0, noise_weight=0.0, empty_weight=0.0)
        else:
            raise SystemExit(f"variant '{variant}': unknown option '{p}' (use -pN, -bX, -nonull, -eS (empty-caption share S), -nodetail, -nonoise, "
                             "-noempty, -nochecks)")
    return parts[0], (parts[1] if len(parts) > 1 else ""), opts


def image_check_inputs(dm: Any) -> tuple[dict, dict[str, dict[str, float]]]:
    """``(references, {check: {key: statistic}})``: the image-check references of ``dm``'s validation split and
    every pool sample's statistics (one decoding pass of each split)."""
    from torch.utils.data import DataLoader

    from lightning_alchemist.data.sample import collate_samples
    from lightning_alchemist.rater.detail import CHECKS, dataset_image_references, image_statistics

    refs = dataset_image_references(dm.val)
    got: dict[str, dict[str, float]] = {n: {} for n in CHECKS}
    for b in DataLoader(dm.pool, batch_size=256, shuffle=False, num_workers=0, collate_fn=collate_samples):
        if len(b["key"]):
            for n, v in image_statistics(b["image"]).items():
                got[n].update(zip(b["key"], v.tolist()))
    return refs, got


def check_inputs(env: dict) -> tuple[dict, dict]:
    """``(references, statistics)``: :func:`image_check_inputs` with each check's statistics as a tensor aligned
    with the pool encodes (computed once per dataset and kept in ``env``)."""
    import torch

    if "checks" not in env:
        refs, got = image_check_inputs(env["dm"])
        env["checks"] = (refs, {n: torch.tensor([v[k] for k in env["pool"].keys]) for n, v in got.items()})
    return env["checks"]


def direct(env: dict, objective: str, proxy: Any, reference: Any, seed: int, opts: dict, batch_size: int = 32) -> tuple[np.ndarray, float]:
    """Ratings of every pool sample by the frozen proxy (ProxyScorer on encoded batches in file order), with
    the image checks of the default config unless ``opts`` turns them off."""
    import torch

    from lightning_alchemist.rater.direct import ProxyScorer

    refs, stats = check_inputs(env)
    info = {"image_checks": {n: r.as_dict() for n, r in refs.items()}}
    scorer = ProxyScorer(proxy, {"objective": objective, "seed": seed, **opts}, reference=reference, info=info)
    t0 = time.perf_counter()
    out = []
    with torch.inference_mode():
        for i, enc in enumerate(env["pool"].batches(batch_size)):
            part = {n: v[i * batch_size : i * batch_size + len(enc["key"])] for n, v in stats.items()}
            out.append(scorer.rate_encoded(enc, i, part))
    return torch.cat(out).numpy(), time.perf_counter() - t0


def amortised(env: dict, overrides: dict, proxy: Any, reference: Any, seed: int, quick: bool) -> tuple[np.ndarray, float, float]:
    """Train a rater on the encodes (RaterModule as the recipe builds it), then score the pool with it."""
    import lightning.pytorch as pl
    import torch
    from omegaconf import OmegaConf

    from lightning_alchemist.rater.config import rater_config
    from lightning_alchemist.rater.encodes import EncodedLoader
    from lightning_alchemist.rater.loader import PairedLoader
    from lightning_alchemist.rater.module import RaterModule

    node = OmegaConf.merge(OmegaConf.structured(env["cfg"].rater), overrides, {"seed": seed})
    if quick:
        node = OmegaConf.merge(node, {"epochs": 2, "steps_per_epoch": 5})
    rcfg = rater_config(node)
    pl.seed_everything(seed, workers=True)
    bs = int(env["cfg"].data.batch_size)
    inputs = proxy.rater_inputs(env["val"].take(range(2)))
    module = RaterModule(proxy, int(inputs.tokens.shape[-1]), int(inputs.text.shape[-1]), rcfg, reference=reference)
    loaders = PairedLoader(EncodedLoader(env["pool"], bs, seed=seed), EncodedLoader(env["val"], bs, seed=seed + 1))
    trainer = pl.Trainer(max_epochs=rcfg.epochs, limit_train_batches=rcfg.steps_per_epoch or 1.0, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loaders)
    train_s = time.perf_counter() - t0
    module.eval()
    t0 = time.perf_counter()
    out = []
    with torch.inference_mode():
        for enc in env["pool"].batches(256):
            out.append(module.rate(proxy.rater_inputs(enc)))
    return torch.cat(out).float().numpy(), train_s, time.perf_counter() - t0


def evaluate(ratings: np.ndarray, kinds: np.ndarray, keys: list[str], ends: Any, seed: int) -> dict[str, Any]:
    """AUC per kind; kept shares and defect share at each keep under the implied selection, top-K and random."""
    from lightning_alchemist.rater.auc import auc
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.strategies import Random, ShiftGaussian, TopK

    names = sorted(set(kinds.tolist()))
    clean = ratings[kinds == "clean"]
    res: dict[str, Any] = {"auc": {k: auc(clean, ratings[kinds == k]) for k in names if k != "clean"}, "kept": {}}
    base = Ratings.from_arrays(keys, ratings)
    r = Ratings(base.keys, base.ratings, ranking=dataclasses.asdict(ends) if ends is not None else None)
    for sname, strat in (("implied", ShiftGaussian()), ("topk", TopK()), ("random", Random())):
        for keep in KEEPS:
            sel = strat.select(r, keep, seed=seed)
            mask = np.zeros(len(ratings), dtype=bool)
            mask[sel.indices] = True
            shares = {k: float(mask[kinds == k].mean()) for k in names}
            res["kept"][f"{sname}@{keep}"] = {"kinds": shares, "defect_share": float((kinds[mask] != "clean").mean()),
                                              "params": sel.meta.get("params")}
    return res


def run_one(env: dict, variant: str, seed: int, args: argparse.Namespace, cache: dict) -> dict[str, Any]:
    from lightning_alchemist.rater.signals import ends_of

    cost: dict[str, float] = {}
    if variant == "official":
        from lightning_alchemist.rater.recipe import build_rater_proxy

        proxy = build_rater_proxy(env["model_cfg"])  # cold, as the main job's rater starts
        ratings, train_s, score_s = amortised(env, {}, proxy, None, seed, args.quick)
        cost.update(warmup_s=0.0, rater_s=train_s, score_s=score_s)
        ends = ends_of("official")
    else:
        kind, name, opts = parse_variant(variant)
        objective = OBJECTIVE_OF[name]
        if "val" not in cache:
            cache["val"] = warm(env, args.warmup_steps, seed, "val")
        proxy, winfo = cache["val"]
        cost["warmup_s"] = winfo["seconds"]
        reference = None
        if objective == "penalty":
            if "pool" not in cache:
                cache["pool"] = warm(env, args.warmup_steps, seed, "pool")
            reference, rinfo = cache["pool"]
            cost["warmup_s"] += rinfo["seconds"]
        if kind == "direct":
            ratings, score_s = direct(env, objective, proxy, reference, seed, opts)
            cost.update(rater_s=0.0, score_s=score_s)
        else:
            overrides = {"objective": objective, "warmup": {"steps": args.warmup_steps, "continuation": "frozen"}, "freeze_proxy": True,
                         "rater_optim": {"warmup_epochs": 0.5}, **opts}
            ratings, train_s, score_s = amortised(env, overrides, proxy, reference, seed, args.quick)
            cost.update(rater_s=train_s, score_s=score_s)
        ends = ends_of(objective)
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{args.current_data}_{variant}_{seed}.npz", keys=np.asarray(env["pool"].keys), kinds=env["kinds"], ratings=ratings)
    out = evaluate(ratings, env["kinds"], env["pool"].keys, ends, seed)
    out.update(variant=variant, seed=seed, cost={k: round(v, 1) for k, v in cost.items()}, ends=dataclasses.asdict(ends))
    return out


def fmt(values: list[float], pct: bool = False) -> str:
    v = np.asarray(values, dtype=float) * (100 if pct else 1)
    if len(v) == 1:
        return f"{v[0]:.0f}" if pct else f"{v[0]:.2f}"
    return (f"{v.mean():.0f}±{(v.max() - v.min()) / 2:.0f}" if pct else f"{v.mean():.2f}±{(v.max() - v.min()) / 2:.2f}")


def markdown(res: dict) -> str:
    lines = [
        "# Rater signals: do the ratings find the bad data?",
        "",
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']}; machine: {res['machine']}; load average (1 min) {res['load_start']} at start, {res['load_end']} at the end "
        "(the 2 cores are shared with other jobs: seconds are wall time under that load).  ",
        f"Seeds: {res['seeds']} (proxy init, warm-up order, rater); proxy star_tiny; warm-up {res['warmup_steps']} steps on the "
        "validation split (20 % held out, early stopping, patience 4 evaluations of 50 steps), no caption drop.",
        "",
        f"Goals (issue 15): {GOALS}.",
        "AUC = P(clean rated above the kind); kept = share of the kind in the selection at that keep; mean ± half-range over seeds.",
        "`implied` = Shift-Gaussian with `head=auto` (the objective's declared ranking ends: `easy` head dropped n=0.2, "
        "mu=0.6; `clean` head kept, n=0, mu=0).",
    ]
    for data_name, block in res["datasets"].items():
        runs = block["runs"]
        kinds = sorted({k for r in runs for k in r["auc"]})
        all_kinds = ["clean", *kinds]
        lines += ["", f"## {data_name} (pool {block['pool_size']}, pool defect share {block['pool_defect_share']:.2f})", ""]
        lines += ["| variant | ends | " + " | ".join(f"AUC {k}" for k in kinds) + " | warm-up s | rater s | score s |",
                  "|---|---|" + "---:|" * (len(kinds) + 3)]
        by_var: dict[str, list] = {}
        for r in runs:
            by_var.setdefault(r["variant"], []).append(r)
        for var, rs in by_var.items():
            aucs = " | ".join(fmt([r["auc"][k] for r in rs]) for k in kinds)
            cost = " | ".join(f"{np.mean([r['cost'][c] for r in rs]):.0f}" for c in ("warmup_s", "rater_s", "score_s"))
            lines.append(f"| {var} | {rs[0]['ends']['head']} head | {aucs} | {cost} |")
        for keep in KEEPS:
            lines += ["", f"Kept share (%) at keep {keep}:", "",
                      "| variant | selection | defect share | " + " | ".join(all_kinds) + " |",
                      "|---|---|---:|" + "---:|" * len(all_kinds)]
            for var, rs in by_var.items():
                for sname in ("implied", "topk"):
                    sel = [r["kept"][f"{sname}@{keep}"] for r in rs]
                    shares = " | ".join(fmt([s["kinds"].get(k, float("nan")) for s in sel], pct=True) for k in all_kinds)
                    lines.append(f"| {var} | {sname} | {fmt([s['defect_share'] for s in sel])} | {shares} |")
            sel = [r["kept"][f"random@{keep}"] for r in runs[:1]]
            shares = " | ".join(fmt([s["kinds"].get(k, float("nan")) for s in sel], pct=True) for k in all_kinds)
            lines.append(f"| (any) | random | {fmt([s['defect_share'] for s in sel])} | {shares} |")
        enc = "loaded from the cache" if block["encode_cached"] else "encoded now, then cached"
        lines += ["", f"Encodes (frozen tokenizer + text encoder, once per split): pool {block['encode_s']['pool']:.0f} s, "
                      f"val {block['encode_s']['val']:.0f} s ({enc}). Warm-up seconds are those of the training run "
                      "(also when a later run loaded it from the cache)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["shapes", "glyphs"], help="embedded datasets (labels needed)")
    parser.add_argument("--pool", type=int, default=0, help="data.<name>.num_pool (0 = the dataset's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}, with options")
    parser.add_argument("--warmup-steps", type=int, default=800)
    parser.add_argument("--warmup", nargs="*", default=[], metavar="KEY=VALUE",
                        help="other warm-up settings (WarmupConfig fields, e.g. final_factor=0.1)")
    parser.add_argument("--quick", action="store_true", help="smoke run: pool 500, warm-up 40 steps, 10 rater steps")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for every run, e.g. rater.proxy.tokenizer.patch_nums=[1,2,3,4,6,8]")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the result files (rater_signal<tag>.md)")
    parser.add_argument("--save", default="", help="also save each variant's ratings as DIR/<data>_<variant>_<seed>.npz")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for item in args.warmup:
        key, _, value = item.partition("=")
        WARMUP_OVERRIDES[key] = json.loads(value) if value[:1].isdigit() or value[:1] in "-[{" else value
    if args.quick:
        args.pool, args.warmup_steps = args.pool or 500, 40
    res: dict[str, Any] = {
        "command": "python benchmarks/rater_signal.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "load_start": round(os.getloadavg()[0], 2),
        "seeds": args.seeds,
        "warmup_steps": args.warmup_steps,
        "warmup_overrides": dict(WARMUP_OVERRIDES),
        "datasets": {},
    }
    for data_name in args.data:
        args.current_data = data_name
        block: dict[str, Any] = {"runs": []}
        for seed in args.seeds:
            env = setup(data_name, args.pool, seed, args.quick, args.override)
            block.update(pool_size=len(env["pool"]), pool_defect_share=float((env["kinds"] != "clean").mean()),
                         encode_s={"pool": env["pool_info"]["seconds"], "val": env["val_info"]["seconds"]},
                         encode_cached=env["pool_info"]["cached"])
            cache: dict[str, Any] = {}
            for variant in args.variants:
                t0 = time.perf_counter()
                run = run_one(env, variant, seed, args, cache)
                run["load"] = round(os.getloadavg()[0], 2)
                block["runs"].append(run)
                imp = run["kept"]["implied@0.5"]
                print(f"[{data_name} seed {seed}] {variant:18s} {time.perf_counter() - t0:6.1f}s  AUC "
                      + " ".join(f"{k}={v:.2f}" for k, v in run["auc"].items())
                      + f" | implied@0.5 defect share {imp['defect_share']:.2f} kept "
                      + " ".join(f"{k}={v:.2f}" for k, v in imp["kinds"].items()), flush=True)
        res["datasets"][data_name] = block
    res["load_end"] = round(os.getloadavg()[0], 2)
    md = markdown(res)
    print(md)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rater_signal{args.tag}.md").write_text(md)
    (out / f"rater_signal{args.tag}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {out / f'rater_signal{args.tag}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
