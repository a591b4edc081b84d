"""Dump the raw material of the rating signals, per pool sample, for offline study (issue 15).

    python benchmarks/signal_probe.py --data shapes --pool 5000 --seeds 0 1 2 --out /tmp/probe

For each dataset and seed: the cached encodes and the cached warm-up of ``rater_signal.py`` (the
same fingerprints, so nothing retrains when those runs are cached), then the warmed-up frozen
proxy's *per-token* cross-entropy ``[N, L]`` under the true caption, under each of ``--partners``
rolled captions (the scorer's batches and shifts) and under the empty caption; the token's scale
index ``[L]``; and (once per dataset) model-free image statistics of the 32-px image the proxy sees.
Every combination (scale weights, β, partner count, composition with an image statistic) is then a
cheap numpy computation on the saved ``.npz``: ``benchmarks/signal_study.py`` reads them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]


def token_ce(proxy, enc) -> "torch.Tensor":
    """Per-token cross-entropy ``[B, L]`` of one encoded batch."""
    import torch.nn.functional as F

    logits = proxy.logits(enc)
    B, L, V = logits.shape
    return F.cross_entropy(logits.reshape(B * L, V).float(), enc["idx"].reshape(-1), reduction="none").view(B, L)


def image_stats(dm, keys: list[str], size: int) -> dict[str, np.ndarray]:
    """Model-free statistics of each pool image at the proxy's resolution (aligned with ``keys``)."""
    from lightning_alchemist.data.decode import SampleDecoder, SkipStats
    from lightning_alchemist.rater.heuristics import _Image, compressed_size, grey_entropy

    pool = dm.pool
    where = {k: i for i, k in enumerate(pool.keys)}
    dec = SampleDecoder(_Image(size), SkipStats())
    names = ("png", "jpeg", "entropy", "hf", "grad", "lap_ratio", "block")
    out = {n: np.full(len(keys), np.nan) for n in names}
    for j, k in enumerate(keys):
        s = dec(pool.raw(where[k]))
        if s is None:
            continue
        im = s["image"]
        a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        out["png"][j] = compressed_size(im, "png")
        out["jpeg"][j] = compressed_size(im, "jpeg", 90)
        out["entropy"][j] = grey_entropy(im)
        gx, gy = np.diff(a, axis=1), np.diff(a, axis=0)
        grad = (np.abs(gx).mean() + np.abs(gy).mean()) / 2
        lap = np.abs(a[1:-1, 1:-1] * 4 - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]).mean()
        # energy above half the Nyquist band over the total (minus DC): blur removes it
        f = np.abs(np.fft.fft2(a - a.mean())) ** 2
        fy, fx = np.meshgrid(np.fft.fftfreq(a.shape[0]), np.fft.fftfreq(a.shape[1]), indexing="ij")
        hi = (np.maximum(np.abs(fx), np.abs(fy)) > 0.25)
        out["hf"][j] = f[hi].sum() / max(f.sum(), 1e-12)
        out["grad"][j] = grad
        out["lap_ratio"][j] = lap / max(grad, 1e-9)
        # share of the gradient on an 8-px grid (blocky images: downscale, JPEG)
        on = (np.abs(gx[:, 7::8]).sum() + np.abs(gy[7::8, :]).sum())
        out["block"][j] = on / max(np.abs(gx).sum() + np.abs(gy).sum(), 1e-12)
    return out


def data_id(dm: Any) -> str:
    """The identity of a generated dataset: its cache folder's name (``shapes-64px-<fingerprint>``)."""
    return Path(dm.labels_path).parent.name


def main(argv: list[str] | None = None) -> int:
    import torch

    import rater_signal as rs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["shapes", "glyphs"])
    p.add_argument("--pool", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--partners", type=int, default=8)
    p.add_argument("--warmup-steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-images", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from lightning_alchemist.rater.signals import null_captions, partner_shifts, rolled_captions

    for data_name in args.data:
        for si, seed in enumerate(args.seeds):
            t0 = time.perf_counter()
            env = rs.setup(data_name, args.pool, seed, False)
            proxy, winfo = rs.warm(env, args.warmup_steps, seed, "val")
            true, empty, rolled = [], [], []
            with torch.inference_mode():
                for enc in env["pool"].batches(args.batch_size):
                    b = len(enc["key"])
                    true.append(token_ce(proxy, enc))
                    empty.append(token_ce(proxy, null_captions(proxy, enc)))
                    shifts = partner_shifts(b, args.partners)
                    r = [token_ce(proxy, rolled_captions(enc, s)) for s in shifts]
                    while len(r) < args.partners:  # a short last batch: repeat its partners
                        r.append(r[len(r) % max(len(shifts), 1)])
                    rolled.append(torch.stack(r, 1))
            levels = proxy.var.lvl_1L.cpu().numpy() if hasattr(proxy.var, "lvl_1L") else np.zeros(true[0].shape[1])
            blob = dict(keys=np.asarray(env["pool"].keys), kinds=env["kinds"], true=torch.cat(true).numpy().astype(np.float32),
                        empty=torch.cat(empty).numpy().astype(np.float32), rolled=torch.cat(rolled).numpy().astype(np.float32),
                        levels=np.asarray(levels).reshape(-1), warmup=str(winfo),
                        # the generated dataset's cache folder (its name fingerprints the generator version and
                        # config): signal_study decodes images by key and must decode the ones this dump rated
                        data_id=data_id(env["dm"]))
            if si == 0 and not args.no_images:
                size = int(proxy.image_size)
                for k, v in image_stats(env["dm"], list(env["pool"].keys), size).items():
                    blob[f"img_{k}"] = v
            np.savez(out / f"{data_name}_{seed}.npz", **blob)
            print(f"[{data_name} seed {seed}] {len(env['pool'])} samples, {time.perf_counter() - t0:.0f} s, warm-up {winfo.get('seconds')} s "
                  f"best step {winfo.get('best_step')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
