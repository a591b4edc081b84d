"""A selection in a plain PyTorch training loop (no Lightning), e.g. a diffusers/accelerate-style script.

    torchrun --nproc-per-node 2 examples/plain_loop.py --data hpdv3 --root /data/HPDv3 \
        --selection outputs/cache/selection/<fp>/selection.parquet --style map
    torchrun --nproc-per-node 2 examples/plain_loop.py --data laion --root /data/laion \
        --selection selection.parquet --style stream

Two drop-in pieces, both usable without a Trainer:

- ``--style map``: a map-style dataset (:class:`~lightning_alchemist.data.mapstyle.ShardDataset`) with
  :class:`~lightning_alchemist.sampling.DistributedWeightedSubsetSampler`: every rank draws the same
  seeded order of the selected positions for ``(seed, epoch)`` and takes its own slice (disjoint, equal
  shares; when the selection does not divide by the world size, ``DistributedSampler``'s padding
  repeats up to ``world - 1`` samples).
- ``--style stream``: a webdataset pipeline split by rank and worker, with
  :class:`~lightning_alchemist.sampling.KeyFilter` dropping unselected samples before they are decoded.
  Ranks may then see different sample counts: the DDP model trains under ``join()`` (uneven inputs).

The model here is a stand-in (it predicts each image's mean colour); put yours in its place. With
``--keys-out DIR`` each rank writes the keys it trained on to ``DIR/rank<r>.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from lightning_alchemist.config import data_config
from lightning_alchemist.data.decode import SampleDecoder
from lightning_alchemist.data.mapstyle import ShardDataset
from lightning_alchemist.data.sample import collate_samples
from lightning_alchemist.data.sources import resolve_source
from lightning_alchemist.data.stream import make_stream
from lightning_alchemist.data.transforms import CenterCropResize
from lightning_alchemist.sampling import DistributedWeightedSubsetSampler, KeyFilter, WeightedSubsetSampler
from lightning_alchemist.selection.manifest import Selection


class SelectedPoolKeys:
    """Key predicate of the stream: in the pool side of the split and in the selection (picklable for workers)."""

    def __init__(self, split, selected: KeyFilter) -> None:
        self.split, self.selected = split, selected

    def __call__(self, key: str) -> bool:
        return self.selected.keeps(key) and self.split.is_pool(key)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a data name: hpdv3, laion, flux_reason, folder, or wds (with --urls)")
    parser.add_argument("--root", default=None, help="the dataset's folder (layouts)")
    parser.add_argument("--urls", default=None, help="webdataset shards (data wds): a folder, glob or brace pattern")
    parser.add_argument("--selection", required=True, help="selection.parquet")
    parser.add_argument("--style", choices=("map", "stream"), default="map")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keys-out", default=None, help="folder: each rank writes the keys it trained on to rank<r>.txt")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # CPU; use "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    cfg = data_config({"name": args.data, "root": args.root, "urls": args.urls, "image_size": args.image_size,
                       "val_fraction": args.val_fraction, "num_workers": 0})
    source = resolve_source(cfg, seed=args.seed)  # layouts convert once; the other ranks wait on the cache lock
    decoder = SampleDecoder(CenterCropResize(args.image_size))
    selection = Selection.read(args.selection)

    if args.style == "map":
        dataset = ShardDataset(source.pool_urls, decoder, key_filter=source.split.is_pool)
        weight = dict(zip(selection.keys.to_pylist(), selection.weights.tolist()))
        indices = np.asarray([i for i, k in enumerate(dataset.keys) if weight.get(k, 0.0) > 0], dtype=np.int64)
        sampler = DistributedWeightedSubsetSampler(WeightedSubsetSampler(indices, seed=args.seed), num_replicas=world, rank=rank)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=collate_samples)
    else:
        sampler = None
        keep = SelectedPoolKeys(source.split, KeyFilter(selection.keys, seed=args.seed))
        stream = make_stream(source.pool_urls, decoder, key_filter=keep)  # split by rank (and worker) inside
        loader = DataLoader(stream, batch_size=args.batch_size, collate_fn=collate_samples)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * args.image_size**2, 3))
    ddp = DistributedDataParallel(model) if distributed else model
    optim = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    seen: list[str] = []
    steps = 0
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a fresh seeded order per epoch, the same on every rank
        with ddp.join() if distributed else contextlib.nullcontext():
            for batch in loader:
                if not batch["key"]:
                    continue
                target = batch["image"].mean(dim=(2, 3))
                loss = torch.nn.functional.mse_loss(ddp(batch["image"]), target)
                optim.zero_grad()
                loss.backward()
                optim.step()
                seen.extend(batch["key"])
                steps += 1
    print(f"rank {rank}/{world}: {steps} steps on {len(seen)} samples ({len(set(seen))} distinct) of "
          f"{len(selection)} selected", flush=True)
    if args.keys_out:
        Path(args.keys_out).mkdir(parents=True, exist_ok=True)
        Path(args.keys_out, f"rank{rank}.txt").write_text("\n".join(seen) + "\n")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
