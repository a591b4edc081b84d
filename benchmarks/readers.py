"""Reader throughput per dataset layout, against a bare pyarrow/tarfile/file read of the same files, in one run.

    python benchmarks/readers.py                 # 400 images of 256 px per layout
    python benchmarks/readers.py --images 2000 --size 512

For each layout a fixture in the released layout is generated (tests/layout_fixtures.py, with its few
bad inputs), then, side by side:
- **bare**: the plainest read of the same files that yields decoded RGB images: ``json`` + file reads
  (hpdv3), ``tarfile`` (laion), ``pyarrow`` ``iter_batches`` (flux_reason), ``os.walk`` + file reads
  (folder), each image decoded by PIL;
- **ours, map / stream**: :class:`~lightning_alchemist.data.datamodule.T2IDataModule`'s pool, read
  by index (map-style) and as the webdataset stream: decode + centre crop + resize to ``--image-size``
  + tensor, i.e. a training sample (more work than the bare read);
- **conversion**: the one-time conversion (hpdv3, flux_reason, folder) or key indexing (laion), from
  a cold cache.

Writes ``benchmarks/results/readers.{md,json}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import statistics
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def _fixtures() -> Any:
    spec = importlib.util.spec_from_file_location("layout_fixtures", ROOT / "tests" / "layout_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Applied to each decoded image by the bare readers: nothing, or the same transform our samples get.
POST: list[Callable[[Any], Any]] = [lambda im: im]


def _decode(data: bytes) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return POST[0](im.convert("RGB"))


def bare_hpdv3(root: Path) -> int:
    n, seen = 0, set()
    for name in ("train.json", "test.json"):
        for pair in json.loads((root / name).read_text()):
            for side in ("path1", "path2"):
                path = root / pair[side]
                if path in seen:
                    continue
                seen.add(path)
                try:
                    _decode(path.read_bytes())
                    n += 1
                except Exception:
                    pass
    return n


def bare_laion(root: Path) -> int:
    n = 0
    for tar in sorted(root.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf:
                if member.name.endswith(".jpg"):
                    _decode(tf.extractfile(member).read())
                    n += 1
    return n


def bare_flux_reason(root: Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    for path in sorted(root.rglob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64, columns=["id", "image", "caption_original"]):
            for image in batch.column("image").field("bytes").to_pylist():
                try:
                    _decode(image)
                    n += 1
                except Exception:
                    pass
    return n


def bare_folder(root: Path) -> int:
    n = 0
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".jpg"):
                try:
                    _decode(Path(folder, name).read_bytes())
                    n += 1
                except Exception:
                    pass
    return n


BARE: dict[str, tuple[str, Callable[[Path], int]]] = {
    "hpdv3": ("json + file reads + PIL", bare_hpdv3),
    "laion": ("tarfile + PIL", bare_laion),
    "flux_reason": ("pyarrow iter_batches + PIL", bare_flux_reason),
    "folder": ("os.walk + file reads + PIL", bare_folder),
}


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


def measure(layout: str, root: Path, image_size: int, rounds: int = 3) -> dict[str, Any]:
    from lightning_alchemist.data.datamodule import T2IDataModule
    from lightning_alchemist.data.stream import make_stream

    cfg = {"name": layout, "root": str(root), "image_size": image_size, "num_workers": 0, "val_fraction": 0.0,
           "convert": {"workers": 1}}
    dm = T2IDataModule(cfg)
    _, convert_s = _timed(lambda: (dm.setup("fit"), 0)[1])
    pool = dm.pool
    n_conv = len(pool)
    bare_name, bare = BARE[layout]
    bare(root)  # warm the page cache for both sides alike
    from lightning_alchemist.data.transforms import CenterCropResize

    transform = CenterCropResize(image_size)

    def bare_tf() -> int:
        POST[0] = transform
        try:
            return bare(root)
        finally:
            POST[0] = lambda im: im

    def ours_map() -> int:
        return sum(1 for i in range(len(pool)) if pool[i] is not None)

    def ours_stream() -> int:
        stream = make_stream(dm.source.pool_urls, dm._decoder(), key_filter=dm.source.split.is_pool)
        return sum(1 for _ in stream)

    # Rounds alternate the readers, and each rate is the median over rounds: other jobs' load hits all alike.
    sides = {"bare": lambda: bare(root), "bare_tf": bare_tf, "map": ours_map, "stream": ours_stream}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in sides.items():
            counts[name], seconds = _timed(fn)
            rates[name].append(counts[name] / seconds)
    med = {k: statistics.median(v) for k, v in rates.items()}
    n_bare, n_map, n_stream = counts["bare"], counts["map"], counts["stream"]
    return {"layout": layout, "bare": bare_name, "samples": n_map, "bare_samples": n_bare,
            "bare_per_s": med["bare"], "bare_transform_per_s": med["bare_tf"], "map_per_s": med["map"], "stream_per_s": med["stream"],
            "rounds": rounds, "spread": {k: [round(min(v)), round(max(v))] for k, v in rates.items()},
            "stream_samples": n_stream, "prepare_s": convert_s, "prepare_per_s": n_conv / convert_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="images per layout (about)")
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="training resolution of our samples")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per layout (median reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    F = _fixtures()
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LIGHTNING_ALCHEMIST_CACHE"] = str(Path(tmp) / "cache")  # a cold cache: conversion is measured
        n = args.images
        makers = {
            "hpdv3": lambda r: F.make_hpdv3(r, n_pool=n, n_val=n // 8, size=args.size),
            "laion": lambda r: F.make_laion(r, shards=4, per_shard=max(5, n * 5 // 16), size=args.size),
            "flux_reason": lambda r: F.make_flux_reason(r, per_file=n // 2, size=args.size),
            "folder": lambda r: F.make_folder(r, n=n, size=args.size),
        }
        for layout, make in makers.items():
            root = Path(tmp) / layout
            make(root)
            row = measure(layout, root, args.image_size, args.rounds)
            rows.append(row)
            print(f"{layout:<12} bare {row['bare_per_s']:7.0f}/s  bare+transform {row['bare_transform_per_s']:7.0f}/s  map {row['map_per_s']:7.0f}/s  stream {row['stream_per_s']:7.0f}/s  "
                  f"prepare {row['prepare_s']:.2f} s ({row['samples']} samples)", flush=True)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load": [round(load0, 1), round(os.getloadavg()[0], 1)],
            "command": f"python benchmarks/readers.py --images {args.images} --size {args.size} --image-size {args.image_size} --rounds {args.rounds}"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "readers.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"# Readers ({meta['date']}, {meta['machine']})", "",
             f"Command: `{meta['command']}`; one thread, no loader workers; each rate is the median of {args.rounds} rounds that "
             f"alternate the readers (min-max per reader in readers.json); load average {meta['load'][0]} at start, "
             f"{meta['load'][1]} at end (other jobs share the CPUs: compare within a row).", "",
             f"Generated JPEGs of {args.size} px in each released layout (with the fixtures' few bad inputs). *bare*: the plainest "
             "read of the same files to decoded RGB images, then the same with our transform applied (the fair baseline); *ours*: a training sample (decode + centre crop + resize to "
             f"{args.image_size} px + tensor), map-style by index and as the webdataset stream; *prepare*: the one-time "
             "conversion into shards (laion: key indexing, no copy) from a cold cache.", "",
             "| layout | samples | bare read | bare/s | bare + our transform/s | ours map/s | ours stream/s | "
             "map / (bare + transform) | stream / (bare + transform) | prepare (once) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = r["bare_transform_per_s"]
        lines.append(f"| {r['layout']} | {r['samples']} | {r['bare']} | {r['bare_per_s']:.0f} | {base:.0f} | {r['map_per_s']:.0f} | "
                     f"{r['stream_per_s']:.0f} | {r['map_per_s'] / base:.2f}x | {r['stream_per_s'] / base:.2f}x | "
                     f"{r['prepare_s']:.2f} s ({r['prepare_per_s']:.0f}/s) |")
    (out / "readers.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'readers.md'}")


if __name__ == "__main__":
    main()
