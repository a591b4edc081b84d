"""Selection at scale: timings and peak memory at 1M / 10M / 30M, with baselines side by side.

    python benchmarks/selection_scale.py            # 1M, 10M, 30M
    python benchmarks/selection_scale.py --quick    # 1M only (plus the 2^24+ multinomial check)

Each case runs in its own subprocess (clean peak-memory numbers). Prints a table and writes
``benchmarks/results/selection_scale.{md,json}`` (or ``--out``). Peak memory is the peak of
traced numpy/Python allocations plus pyarrow's pool during the operation (inputs excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ["read_parquet", "read_ratings", "shift_gauss", "numpy_choice_p", "torch_multinomial", "epoch_order",
         "numpy_permutation", "torch_randperm"]
# Baselines too slow to run at every size (numpy choice(p) without replacement: ~35 s at 30M).
MAX_N = {"numpy_choice_p": 1_000_000}


def make_ratings_dir(n: int, folder: Path, shards: int = 30) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from lightning_alchemist.selection import Ratings

    out = folder / f"ratings-{n}"
    if out.exists():
        return out
    rng = np.random.default_rng(0)
    per = -(-n // shards)
    for s in range(shards):
        lo, hi = s * per, min(n, (s + 1) * per)
        ids = pa.array(np.arange(lo, hi)).cast(pa.string())
        keys = pc.binary_join_element_wise(f"shard-{s:06d}/", pc.utf8_lpad(ids, 9, "0"), "")
        Ratings(pa.chunked_array([keys]), rng.standard_normal(hi - lo)).write(out, f"shard-{s:06d}", fingerprint="bench")
    return out


def run_case(case: str, n: int, data: Path) -> dict:
    """Runs in a fresh process: time and peak memory of one operation."""
    import tracemalloc

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lightning_alchemist.selection import Ratings, ShiftGaussian

    folder = make_ratings_dir(n, data)
    prepared: dict = {}
    if case in ("shift_gauss", "numpy_choice_p", "torch_multinomial"):
        # as a user gets them: read with the checks, which also computes (and caches) the key hashes
        prepared["r"] = Ratings.read(folder)
        prepared["p"] = np.exp(-((np.arange(n) / n - 0.6) ** 2) / (2 * 0.2**2))
        prepared["p"] /= prepared["p"].sum()
    if "torch" in case or case == "epoch_order":
        import torch  # noqa: F401  (import time is not what we measure)

        from lightning_alchemist.sampling import WeightedSubsetSampler  # noqa: F401
    if case in ("epoch_order", "numpy_permutation", "torch_randperm"):
        prepared["idx"] = np.arange(0, n, 2, dtype=np.int32)  # half the items selected

    def op():
        if case == "read_parquet":
            return pq.read_table(folder, columns=["key", "rating"])
        if case == "read_ratings":
            return Ratings.read(folder)
        if case == "shift_gauss":
            return ShiftGaussian().select(prepared["r"], 0.5, seed=0)
        if case == "numpy_choice_p":
            return np.random.default_rng(0).choice(n, n // 2, replace=False, p=prepared["p"])
        if case == "torch_multinomial":
            import torch

            return torch.multinomial(torch.from_numpy(prepared["p"]), n // 2, replacement=False)
        if case == "epoch_order":
            from lightning_alchemist.sampling import WeightedSubsetSampler

            return WeightedSubsetSampler(prepared["idx"], seed=0).order(1)
        if case == "numpy_permutation":
            return np.random.default_rng(0).permutation(prepared["idx"])
        if case == "torch_randperm":
            import torch

            return torch.from_numpy(prepared["idx"])[torch.randperm(len(prepared["idx"]))]
        raise ValueError(case)

    pool = pa.default_memory_pool()
    base_pool = pool.bytes_allocated()
    tracemalloc.start()
    cpu_start = time.process_time()
    start = time.perf_counter()
    try:
        result = op()
        error = None
    except Exception as err:  # e.g. torch.multinomial above 2^24 categories
        result, error = None, f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak += max(0, pool.max_memory() - base_pool) if case.startswith("read") else 0
    del result
    return {"case": case, "n": n, "seconds": None if error else round(seconds, 3), "cpu_s": round(cpu, 3),
            "peak_mb": round(peak / 2**20), "error": error}


def callback_overhead(n_items: int = 200_000, steps: int = 300, batch_size: int = 128, repeats: int = 2) -> dict:
    """Per-step time of a tiny model with and without DataSelectionCallback (subset, keep=0.5), same run."""
    import statistics

    import lightning.pytorch as pl
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from lightning_alchemist.callbacks import DataSelectionCallback
    from lightning_alchemist.selection import Ratings, ShiftGaussian

    class Items(Dataset):
        def __init__(self) -> None:
            self.keys = [f"img{i:08d}" for i in range(n_items)]
            self.x = torch.randn(n_items, 32)

        def __len__(self) -> int:
            return n_items

        def __getitem__(self, i: int):
            return self.x[i]

    data = Items()

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

        def training_step(self, batch, _):
            return self.net(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            return DataLoader(data, batch_size=batch_size, shuffle=True)

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.fit_start = 0.0

        def on_fit_start(self, trainer, pl_module):
            self.fit_start = time.perf_counter()

        def on_train_batch_start(self, *args):
            # time between consecutive batch starts: the step plus fetching the next batch
            now = time.perf_counter()
            if getattr(self, "t0", None) is not None:
                self.times.append(now - self.t0)
            self.t0 = now

    ratings = Ratings.from_arrays(data.keys, np.random.default_rng(0).standard_normal(n_items))
    selection = ShiftGaussian().select(ratings, 0.5, seed=0)
    results: dict[str, list[float]] = {"plain": [], "callback": []}
    setup: dict[str, list[float]] = {"plain": [], "callback": []}
    for _ in range(repeats):
        for name in ("plain", "callback"):
            timer = StepTimer()
            cbs = [timer] + ([DataSelectionCallback(selection)] if name == "callback" else [])
            trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, callbacks=cbs)
            start = time.perf_counter()
            trainer.fit(Tiny())
            total = time.perf_counter() - start
            results[name].append(statistics.median(timer.times[20:]))
            setup[name].append(total - sum(timer.times))
    step = {k: min(v) for k, v in results.items()}
    fit_overhead = {k: min(v) for k, v in setup.items()}
    return {
        "step_ms_plain": round(step["plain"] * 1e3, 3),
        "step_ms_callback": round(step["callback"] * 1e3, 3),
        "step_overhead_pct": round(100 * (step["callback"] / step["plain"] - 1), 2),
        "non_step_s_plain": round(fit_overhead["plain"], 3),
        "non_step_s_callback": round(fit_overhead["callback"], 3),
    }


def sampler_iteration_cost(n_items: int = 2_000_000, repeats: int = 3) -> dict:
    """Per-sample cost of iterating an epoch: our subset sampler (keep=0.5) vs torch's RandomSampler (all)."""
    import numpy as np
    import torch
    from torch.utils.data import RandomSampler

    from lightning_alchemist.sampling import WeightedSubsetSampler

    ours, theirs = [], []
    for r in range(repeats):
        sampler = WeightedSubsetSampler(np.arange(0, n_items, 2), seed=r)
        start = time.perf_counter()
        for _ in sampler:
            pass
        ours.append((time.perf_counter() - start) / len(sampler))
        base = RandomSampler(range(n_items), generator=torch.Generator().manual_seed(r))
        start = time.perf_counter()
        for _ in base:
            pass
        theirs.append((time.perf_counter() - start) / n_items)
    return {"ours_ns_per_sample": round(min(ours) * 1e9, 1), "random_sampler_ns_per_sample": round(min(theirs) * 1e9, 1)}


def run_cases(sizes: list[int], cases: list[str], data: Path, echo: bool = True) -> list[dict]:
    """Each case at each size in its own subprocess (clean peak memory); one row per (case, size)."""
    rows = []
    for n in sizes:
        for case in cases:
            if n > MAX_N.get(case, n):
                continue
            proc = subprocess.run(
                [sys.executable, __file__, "--data", str(data), "--case", case, str(n)], capture_output=True, text=True
            )
            if proc.returncode != 0:
                rows.append({"case": case, "n": n, "seconds": None, "cpu_s": None, "peak_mb": None,
                             "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:100]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            if echo:
                print(f"{case:18s} n={n:>11,d} {str(r['seconds']):>8s} s  cpu {str(r['cpu_s']):>7s} s  "
                      f"{str(r['peak_mb']):>6s} MB  {r['error'] or ''}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M items only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "la-selection-bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: run one case
    parser.add_argument("--skip-callback", action="store_true", help="skip the training-step overhead measurement")
    parser.add_argument("--cases", nargs="*", default=CASES, choices=CASES, help="which cases to run")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), args.data)))
        return
    sizes = args.sizes or ([1_000_000] if args.quick else [1_000_000, 10_000_000, 30_000_000])
    load_before = os.getloadavg()[0]
    rows = run_cases(sizes, args.cases, args.data)
    # ratios vs the baseline measured in the same run
    pairs = {"read_ratings": "read_parquet", "shift_gauss": ("numpy_choice_p", "torch_multinomial"),
             "epoch_order": ("numpy_permutation", "torch_randperm")}
    by = {(r["case"], r["n"]): r for r in rows}
    lines = ["| case | N | seconds | CPU s (this process) | peak MB | speed-up vs baseline (baseline s / ours s) |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = ""
        bases = pairs.get(r["case"], ())
        for base in (bases,) if isinstance(bases, str) else bases:
            b = by.get((base, r["n"]))
            if b and b["seconds"] and r["seconds"]:
                ratio += f"{b['seconds'] / r['seconds']:.2f}x ({base}); "
        lines.append(f"| {r['case']} | {r['n']:,} | {r['seconds'] if r['seconds'] is not None else 'error'} | "
                     f"{r['cpu_s']} | {r['peak_mb']} | {ratio or (r['error'] or '')} |")
    table = "\n".join(lines)
    overhead = None
    iteration = sampler_iteration_cost(200_000 if args.quick else 2_000_000)
    table += (
        f"\n\nSampler iteration (epoch order included), per sample: {iteration['ours_ns_per_sample']} ns "
        f"(WeightedSubsetSampler, subset) vs {iteration['random_sampler_ns_per_sample']} ns (torch RandomSampler)."
    )
    if not args.skip_callback:
        overhead = callback_overhead(steps=150 if args.quick else 300, repeats=3)
        table += (
            "\n\nDataSelectionCallback on a tiny model (median whole-loop time per step, same run): "
            f"{overhead['step_ms_plain']} ms without, {overhead['step_ms_callback']} ms with "
            f"({overhead['step_overhead_pct']:+.2f} %); time outside steps (setup, epoch starts): "
            f"{overhead['non_step_s_plain']} s without, {overhead['non_step_s_callback']} s with."
        )
    header = (
        f"Machine: {os.cpu_count()} CPUs, load average {load_before:.1f} at start and {os.getloadavg()[0]:.1f} at end "
        "(other jobs share the CPUs: compare rows of one run, not runs).\n\n"
    )
    table = header + table
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selection_scale.md").write_text(table + "\n")
    (args.out / "selection_scale.json").write_text(json.dumps({"rows": rows, "callback": overhead, "sampler_iteration": iteration}, indent=1))


if __name__ == "__main__":
    main()
