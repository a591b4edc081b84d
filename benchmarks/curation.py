"""Near-duplicate removal and concept-cluster budgets on the embedded datasets: copies kept, defect shares, cost.

    python benchmarks/curation.py                                   # shapes and glyphs, 5000-sample pools, keep 0.5
    python benchmarks/curation.py --pool 0                          # the full pools (shapes 20k, glyphs 10k)
    python benchmarks/curation.py --data glyphs --keep 0.5,0.3 --seeds 0 1 2
    python benchmarks/curation.py --ratings glyphs=DIR/ratings      # a learned rater's ratings as the rater inside

Copy groups come from the datasets' own records (evaluation only): ``glyphs``' ``dup_group`` column of
``labels.parquet`` (byte-identical copies and lossless re-encodes of a clean source) and ``shapes``' ``copy_of``
field in each duplicate's ``.json`` (byte-identical copies, lossless re-encodes and high-quality JPEG round trips).
A group is its source plus its copies. For each selection at each ``keep`` the benchmark reports:

- ``multi``: the share of copy groups with more than one member kept (the redundancy left);
- ``any``: the share of copy groups with at least one member kept (the content is not lost);
- the kept share of every defect kind, and the selection's defect share without the ``duplicate`` kind;
- ``collateral``: the share of samples outside every copy group that dedup dropped (natural near-copies), by kind,
  and ``clean unique``: the share of clean samples outside every copy group whose caption no other pool sample has
  (so no other sample shows their scene) that dedup dropped — the clean data lost, as opposed to a scene the
  generator drew twice (``shapes`` has 2240 one-object captions; up to its generator v2 two draws of one were the
  same picture, since v3 they differ in position, size, shade and light) or a degraded twin of it;
- ``split``: the copy groups whose members k-means put in more than one cluster (dedup compares within a cluster).

Rows: ``random``; ``dedup+random``; the model-free rater alone (compressed size, its natural middle band,
``rater=heuristic selection=middle``) and after dedup; ``dbp`` (dedup + concept-cluster budgets) with random
or the rater inside; a learned rater's ratings too where ``--ratings`` gives them. Embeddings are the built-in
thumbnail + caption-hash fallback. Means over ``--seeds``. Writes ``benchmarks/results/curation{tag}.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from results_io import command, machine, save

ROOT = Path(__file__).resolve().parents[1]


def datamodule(name: str, seed: int, overrides: list[str]) -> Any:
    """The prepared datamodule of ``data=name`` as the recipes compose it (its default config plus ``overrides``)."""
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.data.datamodule import build_datamodule

    cfg = check_overrides("config", [f"data={name}", f"seed={seed}", *overrides], ROOT / "conf")
    dm = build_datamodule(cfg.data, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def unique_captions(dm: Any) -> set[str]:
    """The pool keys whose caption no other pool sample has."""
    from collections import Counter

    pool = dm.pool
    captions = [pool.raw(i).get("txt", b"") for i in range(len(pool))]
    counts = Counter(captions)
    return {key for key, caption in zip(pool.keys, captions) if counts[caption] == 1}


def copy_groups(dm: Any) -> tuple[dict[str, str], dict[str, int]]:
    """``(key -> defect kind, key -> copy group id)`` of the pool, from labels.parquet and the samples' ``.json``."""
    import pyarrow.parquet as pq

    table = pq.read_table(dm.labels_path)
    kinds = dict(zip(table.column("key").to_pylist(), table.column("defect").to_pylist()))
    pool = dm.pool
    in_pool = set(pool.keys)
    if "dup_group" in table.column_names:
        groups = {k: int(g) for k, g in zip(table.column("key").to_pylist(), table.column("dup_group").to_pylist())
                  if g is not None and int(g) >= 0 and k in in_pool}
        return kinds, groups
    # shapes: each duplicate names its source in its .json (copy_of); the group is the source and its copies
    groups: dict[str, int] = {}
    ids: dict[str, int] = {}
    for i, key in enumerate(pool.keys):
        if kinds.get(key) != "duplicate":
            continue
        meta = json.loads(pool.raw(i)["json"])
        source = meta.get("copy_of")
        if source is None:
            continue
        gid = ids.setdefault(source, len(ids))
        groups[key] = gid
        if source in in_pool:
            groups[source] = gid
    return kinds, groups


def measure(keys: list[str], kept_rows: np.ndarray, kinds: dict[str, str], groups: dict[str, int],
            dropped_by_dedup: Optional[np.ndarray] = None, clusters: Optional[np.ndarray] = None,
            unique: Optional[set[str]] = None) -> dict[str, Any]:
    """The metrics of one selection (see the module docstring); ``clusters``: each row's k-means cluster."""
    kept = np.zeros(len(keys), dtype=bool)
    kept[kept_rows] = True
    gid = np.array([groups.get(k, -1) for k in keys])
    kind = np.array([kinds.get(k, "?") for k in keys], dtype=object)
    n_groups = int(gid.max() + 1) if (gid >= 0).any() else 0
    sizes = np.bincount(gid[gid >= 0], minlength=n_groups)
    kept_per_group = np.bincount(gid[(gid >= 0) & kept], minlength=n_groups)
    real = sizes >= 2
    out: dict[str, Any] = {
        "num_kept": int(kept.sum()),
        "groups": int(real.sum()),
        "multi": round(float((kept_per_group[real] > 1).mean()), 4) if real.any() else None,
        "any": round(float((kept_per_group[real] > 0).mean()), 4) if real.any() else None,
        "kept_share": {k: round(float(kept[kind == k].mean()), 4) for k in sorted(set(kind.tolist()))},
        # the defect share of the rest of the selection: kept samples outside the duplicate kind
        "defect_share_wo_dup": round(float(((kind != "clean") & (kind != "duplicate") & kept).sum())
                                     / max(int(((kind != "duplicate") & kept).sum()), 1), 4),
    }
    if dropped_by_dedup is not None:
        outside = gid < 0
        out["dedup_dropped"] = int(dropped_by_dedup.sum())
        out["collateral"] = round(float(dropped_by_dedup[outside].mean()), 4)
        out["collateral_by_kind"] = {k: round(float(dropped_by_dedup[outside & (kind == k)].mean()), 4)
                                     for k in sorted(set(kind[outside].tolist()))}
        if unique is not None:
            alone = outside & (kind == "clean") & np.array([k in unique for k in keys])
            out["clean_unique_dropped"] = round(float(dropped_by_dedup[alone].mean()), 4)
    if clusters is not None and real.any():
        members = gid >= 0
        spans = {(g, c) for g, c in zip(gid[members].tolist(), clusters[members].tolist())}
        per_group = np.bincount(np.array([g for g, _ in spans]), minlength=n_groups)
        out["split"] = int((per_group[real] > 1).sum())
    return out


def run_dataset(name: str, keeps: list[float], seeds: list[int], eps_list: list[float], work: Path,
                extra: Optional[str], overrides: list[str], embed_cfg: Any) -> dict[str, Any]:
    from lightning_alchemist.curation import CurationConfig, curate, pool_embeddings
    from lightning_alchemist.rater.heuristics import run_heuristic
    from lightning_alchemist.selection.ratings import Ratings
    from lightning_alchemist.selection.strategies import Block, Random, ShiftGaussian

    t0 = time.perf_counter()
    dm = datamodule(name, 0, overrides)
    kinds, groups = copy_groups(dm)
    unique = unique_captions(dm)
    keys = list(dm.pool.keys)
    clean_out = [k for k in keys if kinds.get(k) == "clean" and k not in groups]
    res: dict[str, Any] = {"pool": len(keys), "prepare_s": round(time.perf_counter() - t0, 1),
                           "copy_groups": len(set(groups.values())), "in_groups": len(groups),
                           # clean samples outside the copy groups whose caption (scene) another pool sample also has
                           "clean_shared_caption": round(1 - sum(k in unique for k in clean_out) / max(len(clean_out), 1), 4)}
    t = time.perf_counter()
    emb = pool_embeddings(dm.pool, embed_cfg)
    res["embed_s"] = round(time.perf_counter() - t, 2)
    print(f"{name}: {len(keys)} samples, {res['copy_groups']} copy groups; embeddings {res['embed_s']} s", flush=True)
    flat = Ratings.from_arrays(keys, np.zeros(len(keys)))
    # one folder per materialised dataset (its cache folder's fingerprinted name): another pool size or generator
    # version scores afresh instead of meeting the other's ratings
    heur = run_heuristic(dm, {"score": "compressed_size", "workers": 1, "progress": False},
                         work / name / Path(dm.labels_path).parent.name / "compressed_size").ratings
    raters: dict[str, tuple[Any, Any]] = {"random": (flat, Random()), "heuristic middle": (heur, Block(centre=0.5))}
    if extra:
        raters["learned shift_gauss"] = (Ratings.read(extra), ShiftGaussian())
    # what each row runs: (rater, curation config or None)
    base = {"clusters": 0}
    rows: list[tuple[str, str, Optional[CurationConfig]]] = []
    for rater in raters:
        rows.append((rater, rater, None))
        for eps in eps_list:
            rows.append((f"dedup(eps={eps})+{rater}", rater, CurationConfig(name="dedup", dedup=True, eps=eps, **base)))
        rows.append((f"dbp+{rater}", rater, CurationConfig(name="dbp", dedup=True, budgets=True, eps=eps_list[0], **base)))
    res["rows"] = {}
    for row, rater, cfg in rows:
        ratings, strategy = raters[rater]
        per_keep: dict[str, Any] = {}
        for keep in keeps:
            runs, secs = [], []
            for seed in seeds:
                t = time.perf_counter()
                clusters = None
                if cfg is None:
                    sel = strategy.select(ratings, keep, seed)
                    rows_kept = _rows(keys, sel.keys)
                    dropped = None
                else:
                    out = curate(ratings, emb, cfg, strategy, keep, seed=seed, has_ratings=rater != "random", threads=1)
                    rows_kept = _rows(keys, out.selection.keys)
                    stage = np.array(out.provenance.column("stage").to_pylist(), dtype=object)
                    was_kept = out.provenance.column("kept").to_numpy(zero_copy_only=False)
                    order = _rows(keys, out.provenance.column("key"))
                    dropped = np.zeros(len(keys), dtype=bool)
                    dropped[order[(stage == "dedup") & ~was_kept]] = True  # kept rows name the last stage that kept them
                    clusters = np.empty(len(keys), dtype=np.int64)
                    clusters[order] = out.provenance.column("cluster").to_numpy(zero_copy_only=False)
                secs.append(time.perf_counter() - t)
                runs.append(measure(keys, rows_kept, kinds, groups, dropped, clusters, unique))
            per_seed = {m: [r[m] for r in runs] for m in ("multi", "split", "clean_unique_dropped") if m in runs[0]}
            per_keep[str(keep)] = {**_mean(runs), "per_seed": per_seed, "seconds": round(float(np.mean(secs)), 2)}
        res["rows"][row] = per_keep
        first = per_keep[str(keeps[0])]
        print(f"  {row:<34} keep={keeps[0]}: multi {first['per_seed']['multi']}, any {first['any']}, "
              f"defects w/o dup {first['defect_share_wo_dup']}, split {first['per_seed'].get('split', '-')}, "
              f"clean unique dropped {first.get('clean_unique_dropped', '-')}, {first['seconds']} s", flush=True)
    return res


def _rows(keys: list[str], picked: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    idx = pc.index_in(picked, value_set=pa.array(keys, type=pa.string()))
    return idx.to_numpy(zero_copy_only=False).astype(np.int64)


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of every number (nested dicts too)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = _mean([r[key] for r in runs])
        elif isinstance(value, (int, float)) and value is not None:
            out[key] = round(float(np.mean([r[key] for r in runs])), 4)
        else:
            out[key] = value
    return out


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [f"# Curation: near-copies kept and defect shares ({results['date']})", "",
             f"`{command}`", "", f"Machine: {results['machine']}. Seeds {results['seeds']} (means). "
             f"Embeddings: the built-in thumbnail + caption-hash fallback ({results['embeddings']}).", "",
             "multi = share of copy groups with more than one member kept (redundancy left; lower is better; "
             "per seed in brackets); any = share with at least one kept (content kept); collateral = share of samples "
             "outside every copy group that dedup dropped; clean unique = share of the clean samples outside every copy "
             "group whose caption no other pool sample has that dedup dropped (clean data lost); split = copy groups "
             "spread over more than one k-means cluster (mean over seeds).", ""]
    for name, res in results["datasets"].items():
        lines += [f"## {name} ({res['pool']} samples, {res['copy_groups']} copy groups holding {res['in_groups']} samples; "
                  f"embeddings {res['embed_s']} s)", "",
                  f"{res['clean_shared_caption']:.1%} of the clean samples outside the copy groups share their caption "
                  "(their scene) with another pool sample: a caption drawn twice, or a degraded or mismatched one.", ""]
        keeps = list(next(iter(res["rows"].values())).keys())
        kinds = list(next(iter(next(iter(res["rows"].values())).values()))["kept_share"].keys())
        for keep in keeps:
            lines += [f"### keep={keep}", "",
                      "| selection | kept | multi | any | defects w/o dup | collateral | "
                      + " | ".join(f"kept {k}" for k in kinds) + " | s |",
                      "|---|---:|---:|---:|---:|---:|" + "---:|" * len(kinds) + "---:|"]
            for row, per_keep in res["rows"].items():
                r = per_keep[keep]
                seeds = r["per_seed"]["multi"]
                multi = f"{r['multi']} ({', '.join(str(v) for v in seeds)})" if len(seeds) > 1 else r["multi"]
                lines.append(f"| {row} | {r['num_kept']:.0f} | {multi} | {r['any']} | {r['defect_share_wo_dup']} | "
                             f"{r.get('collateral', '-')} | " + " | ".join(str(r['kept_share'].get(k, '-')) for k in kinds)
                             + f" | {r['seconds']} |")
            lines.append("")
            coll = [(row, per_keep[keep]) for row, per_keep in res["rows"].items() if "collateral_by_kind" in per_keep[keep]]
            if coll:
                ck = list(coll[0][1]["collateral_by_kind"].keys())
                lines += ["Dropped by dedup outside every copy group, by kind (natural near-copies); clean unique: of the "
                          "clean samples whose caption is unique in the pool; split: copy groups over several clusters:", "",
                          "| selection | dropped | " + " | ".join(ck) + " | clean unique | split |",
                          "|---|---:|" + "---:|" * len(ck) + "---:|---:|"]
                lines += [f"| {row} | {r['dedup_dropped']:.0f} | " + " | ".join(str(r['collateral_by_kind'].get(k, '-')) for k in ck)
                          + f" | {r.get('clean_unique_dropped', '-')} | {r.get('split', '-')} |" for row, r in coll]
                lines.append("")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="shapes,glyphs")
    parser.add_argument("--keep", default="0.5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eps", default="0.02,0.05", help="dedup eps values (the first one is dbp's)")
    parser.add_argument("--ratings", action="append", default=[], help="NAME=DIR: a learned rater's ratings for data NAME")
    parser.add_argument("--embed", action="append", default=[], help="FIELD=VALUE of the fallback's EmbeddingsConfig "
                        "(dim, thumb, blur, caption_weight, caption_buckets); default: the schema's")
    parser.add_argument("--pool", type=int, default=5000, help="pool size of each embedded dataset; 0: each one's default "
                        "(shapes 20000, glyphs 10000)")
    parser.add_argument("--work", default=str(Path(os.environ.get("LIGHTNING_ALCHEMIST_CACHE", Path.home() / ".cache" / "lightning_alchemist"))
                                              / "benchmarks" / "curation"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    extra = dict(item.split("=", 1) for item in args.ratings)
    keeps = [float(k) for k in args.keep.split(",")]
    eps_list = [float(e) for e in args.eps.split(",")]
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                               "seeds": args.seeds, "keeps": keeps, "datasets": {}}
    from lightning_alchemist.config import to_dataclass
    from lightning_alchemist.curation import EmbeddingsConfig

    embed_cfg = to_dataclass({k: float(v) if k in ("caption_weight", "blur") else int(v) for k, v in (e.split("=", 1) for e in args.embed)},
                             EmbeddingsConfig, "embed")
    results["embeddings"] = embed_cfg.identity()
    for name in args.data.split(","):
        overrides = [f"data.{name}.num_pool={args.pool}"] if args.pool else []
        results["datasets"][name] = run_dataset(name, keeps, args.seeds, eps_list, Path(args.work), extra.get(name), overrides, embed_cfg)
    md = markdown(results, command("curation.py", argv).strip())
    print(md)
    save(args.results, f"curation{args.tag}", md, results)
    return results


if __name__ == "__main__":
    main()
