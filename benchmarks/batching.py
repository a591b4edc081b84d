"""Batching mixed across clusters vs plain shuffling: clusters per batch, the cost of mixing, and the target's loss.

    python benchmarks/batching.py                       # shapes (20k), k-means of thumbnails, 2 seeds of training
    python benchmarks/batching.py --no-train            # only the batch statistics (seconds)
    python benchmarks/batching.py --seeds 0 --clusters 16 trainer.max_steps=200

1. **Synthetic long tail**: cluster ids with sizes ∝ 1/rank; mean distinct clusters per batch under plain shuffling
   and under :class:`~lightning_alchemist.sampling.mixed.ClusterMixedSampler`, against the most an epoch allows
   (a cluster touches at most min(its size, the number of batches) batches).
2. **Cost**: one epoch's mixed order of 1M (and ``--scale`` items) samples.
3. **shapes**: cluster ids from a k-means (scikit-learn) of a cheap embedding, 8x8 RGB thumbnails; the same batch
   statistics; then the target (``model=star_tiny``) trained for the same number of steps with each batching,
   its loss on the clean validation split (mean ± std over seeds).

Writes ``benchmarks/results/batching.{md,json}`` (or ``--out``). Extra arguments are Hydra overrides of the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from results_io import command, machine, save

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--clusters", type=int, default=32, help="k of the k-means on shapes")
    p.add_argument("--thumb", type=int, default=8, help="thumbnail side (the cheap embedding)")
    p.add_argument("--scale", type=int, default=10_000_000, help="items of the large mixing-cost measurement (0: skip)")
    p.add_argument("--no-train", action="store_true", help="skip the target trainings")
    p.add_argument("--render", default=None, help="only re-write batching.md from a saved batching.json")
    p.add_argument("--work", default=str(ROOT / "outputs" / "batching"), help="training artifacts")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where the tables go")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_steps=200 data.shapes.num_pool=5000")
    return p.parse_args(argv)


def zipf_ids(n: int, k: int, seed: int = 0) -> np.ndarray:
    sizes = 1.0 / np.arange(1, k + 1)
    counts = np.maximum(1, np.floor(sizes / sizes.sum() * n)).astype(int)
    counts[0] += n - counts.sum()
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), counts))


def batch_stats(ids: np.ndarray, batch: int, epochs: int = 3, seed: int = 0) -> dict[str, float]:
    """Mean distinct clusters per batch (shuffled, mixed), the bound, and the mean top-cluster share of a batch."""
    from lightning_alchemist.sampling.mixed import ClusterMixedSampler, distinct_per_batch
    from lightning_alchemist.sampling.samplers import WeightedSubsetSampler

    n = len(ids)
    base = WeightedSubsetSampler(np.arange(n), seed=seed)
    mixed = ClusterMixedSampler(base, ids)
    out: dict[str, list[float]] = {"shuffled": [], "mixed": [], "shuffled_min": [], "mixed_min": []}
    for epoch in range(epochs):
        s = distinct_per_batch(base.order(epoch), ids, batch)
        m = distinct_per_batch(mixed.order(epoch), ids, batch)
        out["shuffled"].append(float(s.mean()))
        out["mixed"].append(float(m.mean()))
        out["shuffled_min"].append(float(s.min()))
        out["mixed_min"].append(float(m.min()))
    nb = n // batch
    bound = float(np.minimum(np.bincount(ids - ids.min()), nb).sum() / nb)
    return {"n": n, "clusters": int(len(np.unique(ids))), "batch": batch, "bound": bound,
            **{k: float(np.mean(v)) for k, v in out.items()}}


def mixing_cost(n: int, k: int) -> dict[str, float]:
    from lightning_alchemist.sampling.mixed import mixed_order
    from lightning_alchemist.selection.draw import make_rng

    ids = zipf_ids(n, k)
    items = np.arange(n, dtype=np.int32)
    t0 = time.perf_counter()
    mixed_order(items, ids, make_rng(0, 0))
    mixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_rng(0, 0).permutation(items)
    plain = time.perf_counter() - t0
    return {"n": n, "clusters": k, "mixed_s": round(mixed, 2), "shuffle_s": round(plain, 2)}


def thumbnails(pool: Any, side: int) -> np.ndarray:
    """An ``[N, 3·side²]`` float32 embedding: each pool image shrunk to ``side``×``side`` (decoded once)."""
    import io

    from PIL import Image

    out = np.empty((len(pool), 3 * side * side), dtype=np.float32)
    for i in range(len(pool)):
        raw = pool.raw(i)
        data = next(v for k, v in raw.items() if k in ("png", "jpg", "jpeg", "webp"))
        with Image.open(io.BytesIO(data)) as im:
            small = im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        out[i] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return out


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048).fit_predict(x).astype(np.int64)


def train_once(cfg: Any, batching: str, ids: np.ndarray, seed: int, work: Path) -> dict[str, Any]:
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.schema import validate
    from lightning_alchemist.target.train import train_target

    v = validate(cfg)
    v.data.batching = batching  # type: ignore[assignment]
    dm = build_datamodule(v.data, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    dm.clusters = ids
    t0 = time.time()
    result = train_target(v.model, v.finetune, v.trainer, dm, work / f"{batching}_seed{seed}", seed=seed)
    return {"batching": batching, "seed": seed, "val_loss": result.val_loss, "steps": result.steps,
            "samples_seen": result.samples_seen, "seconds": round(time.time() - t0, 1)}


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render:  # re-write the Markdown of saved results
        results = json.loads(Path(args.render).read_text())
        (Path(args.out) / "batching.md").write_text(render(results))
        return results
    import torch

    torch.set_num_threads(1)
    from lightning_alchemist.cli import check_overrides

    results: dict[str, Any] = {"synthetic": [], "cost": [], "shapes": None, "train": []}
    for k, batch in [(10, 32), (100, 32), (1000, 32), (100, 256)]:
        results["synthetic"].append(batch_stats(zipf_ids(100_000, k), batch))
        print("synthetic", results["synthetic"][-1], flush=True)
    for n in [1_000_000] + ([args.scale] if args.scale and args.scale != 1_000_000 else []):
        results["cost"].append(mixing_cost(n, 10_000))
        print("cost", results["cost"][-1], flush=True)

    work = Path(args.work)
    cfg = check_overrides("config", [f"out={work}", "trainer.enable_progress_bar=false", "keep=1.0",
                                     *args.overrides], ROOT / "conf")
    from lightning_alchemist.data.datamodule import build_datamodule
    from lightning_alchemist.schema import validate

    v = validate(cfg)
    dm = build_datamodule(v.data, seed=v.seed)
    dm.prepare_data()
    dm.setup("fit")
    t0 = time.time()
    emb = thumbnails(dm.pool, args.thumb)
    t_emb = time.time() - t0
    t0 = time.time()
    ids = kmeans(emb, args.clusters, seed=v.seed)
    t_km = time.time() - t0
    sizes = np.bincount(ids, minlength=args.clusters)
    shapes = batch_stats(ids, v.data.batch_size)
    shapes.update(embed_s=round(t_emb, 1), kmeans_s=round(t_km, 1), largest=int(sizes.max()), smallest=int(sizes.min()))
    results["shapes"] = shapes
    print("shapes", shapes, flush=True)

    if not args.no_train:
        for seed in args.seeds:
            for batching in ("shuffle", "mixed"):
                run = train_once(cfg, batching, ids, seed, work)
                results["train"].append(run)
                print("train", run, flush=True)

    results["model"], results["batch_size"], results["thumb"] = getattr(v.model, "name", "model"), v.data.batch_size, args.thumb
    results["command"], results["machine"] = command("batching.py", argv), machine()
    save(args.out, "batching", render(results), results)
    return results


def render(r: dict[str, Any]) -> str:
    """The Markdown report of a results dict (also from a saved ``batching.json``: ``--render``)."""
    lines = [f"# Batching mixed across clusters vs shuffling ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{r['machine']})", "", f"Command: `{r['command']}`", "",
             "Mean distinct clusters per batch (3 epochs; min: the worst batch). Bound: the most an epoch covering "
             "every sample once allows, sum over clusters of min(size, batches) / batches.", "",
             "| data | samples | clusters | batch | shuffled | mixed | bound | worst batch shuffled / mixed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in r["synthetic"]:
        lines.append(f"| long tail (size ∝ 1/rank) | {s['n']} | {s['clusters']} | {s['batch']} | {s['shuffled']:.2f} | "
                     f"{s['mixed']:.2f} | {s['bound']:.2f} | {s['shuffled_min']:.0f} / {s['mixed_min']:.0f} |")
    s = r["shapes"]
    side = r.get("thumb", 8)
    lines.append(f"| shapes, k-means of {side}x{side} thumbnails | {s['n']} | {s['clusters']} | {s['batch']} | "
                 f"{s['shuffled']:.2f} | {s['mixed']:.2f} | {s['bound']:.2f} | {s['shuffled_min']:.0f} / {s['mixed_min']:.0f} |")
    lines += ["", f"shapes clusters: sizes {s['smallest']}..{s['largest']}; thumbnails {s['embed_s']} s, k-means {s['kmeans_s']} s.",
              "", "Cost of one epoch's order (numpy, one thread; 10,000 long-tail clusters):", "",
              "| samples | mixed order (s) | plain permutation (s) |", "|---:|---:|---:|"]
    for c in r["cost"]:
        lines.append(f"| {c['n']:,} | {c['mixed_s']} | {c['shuffle_s']} |")
    if r["train"]:
        by: dict[str, list[dict[str, Any]]] = {}
        for run in r["train"]:
            by.setdefault(run["batching"], []).append(run)
        steps = r["train"][0]["steps"]
        lines += ["", f"Target `{r.get('model', 'star_tiny')}` on the whole shapes pool, {steps} steps of "
                      f"{r.get('batch_size', 32)} (equal compute), validation loss on the clean held-out split:", "",
                  "| batching | val_loss (mean ± std) | per seed | seconds |", "|---|---:|---|---:|"]
        for name, runs in by.items():
            per = ", ".join(f"{x['val_loss']:.4f}" for x in runs)
            lines.append(f"| {name} | {mean_std([x['val_loss'] for x in runs])} | {per} | "
                         f"{statistics.fmean(x['seconds'] for x in runs):.0f} |")
        pairs = {x["seed"]: x["val_loss"] for x in by.get("mixed", [])}
        diffs = [pairs[x["seed"]] - x["val_loss"] for x in by.get("shuffle", []) if x["seed"] in pairs]
        if diffs:
            better = sum(d < 0 for d in diffs)
            lines += ["", f"Paired by seed (same initialisation and noise, only the order differs): mixed − shuffled = "
                          f"{mean_std(diffs)}; mixed lower in {better} of {len(diffs)} seeds."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
