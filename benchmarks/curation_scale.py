"""Curation at scale: k-means + near-duplicate removal + concept-cluster budgets on N synthetic embeddings, bounded memory.

    python benchmarks/curation_scale.py --sizes 1000000 3000000          # measured here (2 shared cores)
    python benchmarks/curation_scale.py --sizes 10000000 --tag _10m      # the 10M goal (minutes on a bigger CPU)

The embeddings (float32, ``--dim`` wide) are written once, chunk by chunk, into a ``.npy`` file and read back
memory-mapped, as :meth:`~lightning_alchemist.curation.embeddings.Embeddings.read` gives them. They are a
long-tailed mixture of ``--concepts`` clusters of mixed spread on the unit sphere, with ``--copy-share`` of the
rows planted as near-copies (cosine > 0.999) of other rows. The stages are the library's own:
:func:`~lightning_alchemist.curation.clusters.fit_kmeans` (``MiniBatchKMeans.partial_fit`` over seeded chunks,
``--passes`` sweeps), :func:`~lightning_alchemist.curation.clusters.assign` (chunked),
:func:`~lightning_alchemist.curation.dedup.semdedup` (one cluster's rows in memory at a time) and
:func:`~lightning_alchemist.curation.budgets.cluster_budgets` with farthest-first picking inside each cluster.

Reported per size: seconds per stage, the planted copies found, and memory: the peak of the process's anonymous
resident memory (its own arrays; sampled every 0.1 s) and the peak resident set (``VmHWM``, which also counts the
memory-mapped file's pages the kernel keeps cached and may drop). Sizes not measured are extrapolated from the
largest measured one (k-means and assignment ∝ N·k, dedup ∝ N²/k, memory above the import baseline ∝ N), in rows
marked *extrapolated*.
Writes ``benchmarks/results/curation_scale{tag}.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from results_io import command, machine, save

ROOT = Path(__file__).resolve().parents[1]


class MemoryPeak:
    """Samples ``/proc/self/status`` (RssAnon, VmHWM) in a thread; ``peak_anon_mb`` is the largest RssAnon seen."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("RssAnon", "VmHWM", "VmRSS"):
                    out[name] = int(rest.split()[0])
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_kb = max(self.peak_anon_kb, self.status().get("RssAnon", 0))
            time.sleep(self.every)

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_kb = max(self.peak_anon_kb, self.status().get("RssAnon", 0))


def write_embeddings(path: Path, n: int, dim: int, concepts: int, copy_share: float, seed: int,
                     chunk: int = 250_000) -> dict[str, Any]:
    """A long-tailed, mixed-spread mixture on the unit sphere with planted near-copies, written chunk by chunk."""
    from lightning_alchemist.selection.draw import make_rng

    rng = make_rng(seed, 1)
    centres = rng.standard_normal((concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    share = 1.0 / np.arange(1, concepts + 1) ** 1.1  # Zipf-like concept frequencies: a long tail
    share /= share.sum()
    # tight to spread concepts: members of the tightest are ~0.92 cosine apart, well below the copies' 0.999
    spread = rng.uniform(0.3, 1.0, concepts).astype(np.float32) / math.sqrt(dim)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    planted = 0
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        crng = make_rng(seed, 2, start)
        c = crng.choice(concepts, size=m, p=share)
        x = centres[c] + crng.standard_normal((m, dim)).astype(np.float32) * spread[c, None]
        copies = int(copy_share * m)
        if copies and m > copies:
            dst = crng.choice(np.arange(1, m), size=copies, replace=False)
            src = (crng.random(copies) * dst).astype(np.int64)  # an earlier row of the chunk
            x[dst] = x[src] + crng.standard_normal((copies, dim)).astype(np.float32) * (0.002 / math.sqrt(dim))
            planted += copies
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    out.flush()
    del out
    return {"planted_copies": planted}


def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from lightning_alchemist.curation.budgets import cluster_budgets, cluster_complexity, intra_distances
    from lightning_alchemist.curation.clusters import assign, auto_clusters, fit_kmeans, groups
    from lightning_alchemist.curation.dedup import priority, semdedup

    path = work / f"emb_{n}_{args.dim}.npy"
    t = time.perf_counter()
    info = write_embeddings(path, n, args.dim, args.concepts, args.copy_share, args.seed)
    gen_s = time.perf_counter() - t
    x = np.load(path, mmap_mode="r")
    k = args.clusters or auto_clusters(n)
    import sklearn.cluster  # noqa: F401  (imported before the baseline: it is not the data's memory)

    row: dict[str, Any] = {"n": n, "dim": args.dim, "clusters": k, "auto_clusters": not args.clusters,
                           "generate_s": round(gen_s, 1), **info,
                           "baseline_anon_mb": round(MemoryPeak.status().get("RssAnon", 0) / 1024)}
    from lightning_alchemist.curation.plan import blas_threads

    with MemoryPeak() as mem, blas_threads(args.threads):
        t0 = time.perf_counter()
        centroids = fit_kmeans(x, k, seed=args.seed, batch_size=args.batch, passes=args.passes, max_in_memory=0)
        row["kmeans_s"] = round(time.perf_counter() - t0, 1)
        t = time.perf_counter()
        labels, dist = assign(x, centroids)
        row["assign_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        res = semdedup(x, labels, k, args.eps, priority("central", dist), max_cluster=args.max_cluster, seed=args.seed)
        row["dedup_s"] = round(time.perf_counter() - t, 1)
        row["dedup_dropped"] = res.dropped
        t = time.perf_counter()
        alive = res.keep
        sizes = np.bincount(labels[alive], minlength=k)
        complexity = cluster_complexity(centroids, intra_distances(labels, dist, k))
        want = min(int(args.keep * n), int(alive.sum()))
        budgets = cluster_budgets(sizes, complexity, want, tau=0.5)
        order, bounds = groups(labels[alive], k)
        survivors = np.flatnonzero(alive)
        kept = np.zeros(n, dtype=bool)
        for j in range(k):
            members = survivors[order[bounds[j]:bounds[j + 1]]]
            kept[members[np.argsort(-dist[members], kind="stable")[:budgets[j]]]] = True
        row["budgets_s"] = round(time.perf_counter() - t, 1)
        row["kept"] = int(kept.sum())
        row["total_s"] = round(time.perf_counter() - t0, 1)
    status = MemoryPeak.status()
    row["peak_anon_mb"] = round(mem.peak_anon_kb / 1024)
    row["peak_rss_mb"] = round(status.get("VmHWM", 0) / 1024)
    row["file_mb"] = round(path.stat().st_size / 2**20)
    del x
    path.unlink()
    return row


def _group(n: int, k: int, max_cluster: int) -> float:
    """The size of the groups dedup compares pairwise: a cluster, or its parts when it exceeds ``max_cluster``."""
    return n / k if n / k <= max_cluster else max_cluster / 2


def extrapolate(rows: list[dict[str, Any]], n: int, max_cluster: int) -> dict[str, Any]:
    """Cost model from the largest measured row: k-means and assignment ∝ N·k, dedup ∝ N·(its group size), budgets
    ∝ N; memory above the import baseline linear in N, fitted through the two largest measured rows (one: ∝ N)."""
    from lightning_alchemist.curation.clusters import auto_clusters

    row = max(rows, key=lambda r: r["n"])
    ratio = n / row["n"]
    k = auto_clusters(n) if row.get("auto_clusters", True) else row["clusters"]
    k_ratio = k / row["clusters"]
    out = {"n": n, "dim": row["dim"], "clusters": k, "extrapolated_from": row["n"]}
    out["kmeans_s"] = round(row["kmeans_s"] * ratio * k_ratio)
    out["assign_s"] = round(row["assign_s"] * ratio * k_ratio)
    out["dedup_s"] = round(row["dedup_s"] * ratio * _group(n, k, max_cluster) / _group(row["n"], row["clusters"], max_cluster))
    out["budgets_s"] = round(row["budgets_s"] * ratio)
    out["total_s"] = out["kmeans_s"] + out["assign_s"] + out["dedup_s"] + out["budgets_s"]
    two = sorted(rows, key=lambda r: r["n"])[-2:]
    for key in ("peak_anon_mb", "peak_rss_mb"):
        if len(two) == 2:
            slope = (two[1][key] - two[0][key]) / (two[1]["n"] - two[0]["n"])
            out[key] = round(two[1][key] + slope * (n - two[1]["n"]))
        else:
            base = row.get("baseline_anon_mb", 0)
            out[key] = round(base + (row[key] - base) * ratio)
    return out


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"# Curation at scale: k-means + dedup + budgets ({res['date']})", "", f"`{command}`", "",
             f"Machine: {res['machine']}; {res['threads']} BLAS thread(s). Synthetic embeddings d={res['dim']}, "
             f"{res['concepts']} long-tailed concepts, {res['copy_share']:.0%} planted near-copies; eps={res['eps']}, "
             f"keep={res['keep']}, dedup groups at most {res['max_cluster']}, k-means: {res['passes']} partial_fit passes of {res['batch']}-row chunks, clusters √N "
             "(at most 1000) unless --clusters.", "",
             "| N | clusters | k-means s | assign s | dedup s | budgets s | total s | dropped as copies (planted) | "
             "peak anon MB (baseline) | peak RSS MB (incl. mapped file) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        mark = f" *extrapolated from {r['extrapolated_from']:,}*" if "extrapolated_from" in r else ""
        dropped = f"{r['dedup_dropped']:,} ({r['planted_copies']:,})" if "dedup_dropped" in r else "-"
        lines.append(f"| {r['n']:,}{mark} | {r['clusters']} | {r['kmeans_s']} | {r['assign_s']} | {r['dedup_s']} | "
                     f"{r['budgets_s']} | {r['total_s']} | {dropped} | {r['peak_anon_mb']}"
                     + (f" ({r['baseline_anon_mb']})" if "baseline_anon_mb" in r else "") + f" | {r['peak_rss_mb']} |")
    lines += ["", "Generation of the synthetic file is not counted. Dedup also drops natural near-copies of the "
              "tightest concepts (cosine > 1 − eps), so its count can exceed the planted one."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--extrapolate", type=int, nargs="*", default=[10_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--concepts", type=int, default=2000)
    parser.add_argument("--copy-share", type=float, default=0.02)
    parser.add_argument("--clusters", type=int, default=0, help="0: √N, at most 1000")
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--max-cluster", type=int, default=4096, help="dedup splits larger clusters first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1: the shared 2-core machine's rule)")
    parser.add_argument("--work", default="/tmp/curation_scale")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                           "dim": args.dim, "concepts": args.concepts, "copy_share": args.copy_share, "eps": args.eps,
                           "keep": args.keep, "max_cluster": args.max_cluster, "threads": args.threads, "passes": args.passes, "batch": args.batch, "rows": []}
    for n in args.sizes:
        row = run_size(n, args, work)
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
    measured = max(res["rows"], key=lambda r: r["n"])
    for n in args.extrapolate or []:
        if n > measured["n"]:
            res["rows"].append(extrapolate([r for r in res["rows"] if "extrapolated_from" not in r], n, args.max_cluster))
    md = markdown(res, command("curation_scale.py", argv).strip())
    print(md)
    save(args.results, f"curation_scale{args.tag}", md, res)
    return res


if __name__ == "__main__":
    main()
