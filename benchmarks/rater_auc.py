"""Rater quality on a labelled dataset (``shapes``, ``glyphs``): train a rater, score the pool, AUC(clean > defect) per defect kind.

    python benchmarks/rater_auc.py                         # the default rater config (conf/rater/default.yaml)
    python benchmarks/rater_auc.py rater=tiny rater.epochs=10   # any recipe overrides
    python benchmarks/rater_auc.py --quick                 # smoke run: 2 short epochs, 5 scored shards

It runs the two recipes as they ship (``recipes/train_rater.py out=WORK ...``, then
``recipes/score.py rater=WORK/rater.ckpt out=WORK ...``) and evaluates the ratings against the
dataset's ``labels.parquet`` (:mod:`lightning_alchemist.rater.auc`); AUC(kind) = P(a clean sample
rates above a sample of that kind). ``plain`` rating *above* clean (AUC near 0) is what the method
predicts (the "too easy" head that Shift-Gaussian sampling drops). Prints a table and writes
``benchmarks/results/rater_auc.{md,json}`` (``--results`` elsewhere), with the stage timings, the
CPU time of each stage and the load average around it (the machine may be shared), and the
tokenizer's training stats (it is trained once on first use and cached; a cached one costs nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["rater.epochs=2", "rater.steps_per_epoch=10"]
QUICK_SCORE = ["+trainer.limit_predict_batches=160"]  # 5 shards of 1000 at batch 32


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_stage(name: str, cmd: list[str], log: Path) -> dict:
    """Run one recipe; wall and CPU seconds, and the 1-min load average before/after."""
    load0, cpu0, t0 = os.getloadavg()[0], _children_cpu(), time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{name} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}


def resolved(overrides: list[str]) -> dict:
    """The composed root config (data, rater, model) the recipes will see."""
    from omegaconf import OmegaConf

    from lightning_alchemist.cli import check_overrides

    cfg = check_overrides("config", overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def labels_path(data: dict) -> Path:
    from lightning_alchemist.config import data_config
    from lightning_alchemist.data.sources import resolve_source

    path = resolve_source(data_config(data)).labels_path
    if path is None:
        raise SystemExit("the rater AUC benchmark needs labelled defects: data=shapes or data=glyphs (or shards with a labels.parquet)")
    return path


def tokenizer_stats(rater_cfg: dict, model: dict, data: Optional[dict] = None) -> dict:
    """Stats of the proxy's cached VQ tokenizer (STAR proxies only)."""
    import torch

    from lightning_alchemist.rater.recipe import proxy_model_config

    from lightning_alchemist.proxy.factory import fit_to_data

    node = fit_to_data(proxy_model_config(rater_cfg.get("proxy"), model), data)
    if node.get("family") != "star":
        return {}
    from lightning_alchemist.proxy.factory import model_config
    from lightning_alchemist.proxy.star.train_vq import tokenizer_cache_path

    vq = model_config(node).tokenizer
    if vq.checkpoint:
        return {"checkpoint": vq.checkpoint}
    path = tokenizer_cache_path(vq)
    if not path.is_file():
        return {"path": str(path), "cached": False}
    return {"path": str(path), **torch.load(path, map_location="cpu", weights_only=True).get("stats", {})}


def markdown(res: dict) -> str:
    lines = [
        f"# Rater AUC on {res.get('data', 'shapes')}",
        "",
        f"Command: `{res['command']}`  ",
        f"Overrides: `{' '.join(res['overrides']) or '(none: the default config)'}`  ",
        f"Machine: {res['machine']}; {res['date']}",
        "",
        "AUC(kind) = P(clean rated above kind); 1.0 = every defective sample below every clean one, 0.5 = chance.",
        "`plain` near 0 is the method's \"too easy\" head (rated above clean), dropped by Shift-Gaussian sampling.",
        "",
        "| defect | n | AUC(clean > defect) |",
        "|---|---:|---:|",
    ]
    for kind, v in res["auc"].items():
        if kind != "clean":
            lines.append(f"| {kind} | {v['n']} | {v['auc']:.3f} |")
    lines += ["", f"clean n = {res['auc'].get('clean', {}).get('n')}", "", "| stage | wall s | CPU s | load before / after |", "|---|---:|---:|---|"]
    for name, t in res["timings"].items():
        lines.append(f"| {name} | {t['wall_s']} | {t['cpu_s']} | {t['load_before']} / {t['load_after']} |")
    if res.get("scoring_samples_per_s"):
        lines.append(f"\nScoring throughput: {res['scoring_samples_per_s']} samples/s (wall, incl. start-up).")
    tok = res.get("tokenizer") or {}
    if "steps" in tok:
        lines.append(f"\nTokenizer (trained once, cached): {tok['steps']} steps, {tok.get('seconds', 0):.0f} s when trained, "
                     f"eval recon MSE {tok.get('eval_rec_mse', float('nan')):.4f}, codes used {tok.get('codes_used')}/{tok.get('vocab_size')}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs of 10 steps, 5 scored shards (smoke run)")
    parser.add_argument("--work", default=None, help="folder for the rater and ratings (default: a temp folder)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where rater_auc.{md,json} go")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. rater=tiny rater.epochs=10")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    overrides = list(args.overrides) + (QUICK if args.quick else [])
    cfg = resolved(overrides)
    labels = labels_path(cfg["data"])
    work = Path(args.work or tempfile.mkdtemp(prefix="rater_auc-"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    # the scorer shares the data (and the held-out split's seed) and where/how to run
    data_overrides = [o for o in overrides if o.lstrip("+").startswith(("data.", "data=", "seed=", "trainer."))]
    timings = {
        "train_rater": run_stage("train_rater", [py, "recipes/train_rater.py", f"out={work}", "trainer.enable_progress_bar=false", *overrides],
                                 work / "train_rater.log"),
    }
    timings["score"] = run_stage("score", [py, "recipes/score.py", f"rater={work / 'rater.ckpt'}", f"out={work}", "overwrite=true",
                                           "trainer.enable_progress_bar=false", *data_overrides, *(QUICK_SCORE if args.quick else [])],
                                 work / "score.log")

    import pyarrow.parquet as pq

    from lightning_alchemist.rater.auc import defect_aucs
    from lightning_alchemist.selection.ratings import Ratings

    r = Ratings.read(work / "ratings")
    ratings = dict(zip(r.keys.to_pylist(), r.ratings.tolist()))
    t = pq.read_table(labels)
    res_auc = defect_aucs(ratings, dict(zip(t.column("key").to_pylist(), t.column("defect").to_pylist())))
    res = {
        "command": " ".join(["python benchmarks/rater_auc.py", *(["--quick"] if args.quick else []), *args.overrides]),
        "overrides": overrides,
        "rater": cfg["rater"],
        "data": cfg["data"].get("name"),
        "labels": str(labels),
        "work": str(work),
        "auc": res_auc,
        "timings": timings,
        "scored": len(ratings),
        "scoring_samples_per_s": round(len(ratings) / timings["score"]["wall_s"], 1) if timings["score"]["wall_s"] else None,
        "tokenizer": tokenizer_stats(cfg["rater"], cfg.get("model") or {}, cfg["data"]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    md = markdown(res)
    print(md)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rater_auc.md").write_text(md)
    (out / "rater_auc.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"wrote {out / 'rater_auc.md'} and {out / 'rater_auc.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
