"""Train (and cache) the tiny multi-scale VQ tokenizer on the embedded ``shapes`` data.

Random VQ codes are meaningless, so a STAR proxy without a tokenizer checkpoint uses one trained
here: reconstruction MSE + the VQ loss (commitment β and codebook terms), with dead codes restarted
from encoder features. The result is cached under
``<cache_root>/tokenizers/<fingerprint>.pt`` (fingerprint of the tokenizer config and data), and
a file lock keeps concurrent processes from training it twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.paths import file_lock
from lightning_alchemist.proxy.star.tokenizer import MultiScaleVQVAE, VQConfig

log = logging.getLogger(__name__)

__all__ = ["tokenizer_fingerprint", "tokenizer_cache_path", "train_tokenizer", "load_or_train_tokenizer", "shapes_images"]

_TRAIN_VERSION = 1
_ARCH_FIELDS = ("vocab_size", "z_channels", "ch", "ch_mult", "num_res_blocks", "using_sa", "using_mid_sa", "norm_groups", "dropout",
                "beta", "quant_resi", "share_quant_resi", "patch_nums")
_TRAIN_FIELDS = ("train_steps", "train_batch_size", "train_lr", "train_samples", "seed")


def tokenizer_fingerprint(cfg: VQConfig, data_tag: str = "shapes") -> str:
    """Stable id of (architecture, training settings, data) — the cache file name."""
    d = dataclasses.asdict(cfg)
    payload = {"v": _TRAIN_VERSION, "data": data_tag, **{k: d[k] for k in _ARCH_FIELDS + _TRAIN_FIELDS}}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def tokenizer_cache_path(cfg: VQConfig, cache_dir: Optional[str | Path] = None) -> Path:
    if cache_dir is None:
        from lightning_alchemist.paths import cache_root

        cache_dir = cache_root() / "tokenizers"
    return Path(cache_dir).expanduser() / f"{tokenizer_fingerprint(cfg)}.pt"


def shapes_images(n: int, image_size: int, seed: int = 0, data_cfg: Optional[dict] = None) -> Tensor:
    """``n`` pool images ``[n,3,S,S]`` in [-1,1] from the embedded ``shapes`` dataset (its data module)."""
    from lightning_alchemist.data.datamodule import build_datamodule

    node = {"name": "shapes", "image_size": image_size, "batch_size": 256, **(data_cfg or {})}
    dm = build_datamodule(node, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    out, total = [], 0
    for batch in dm.train_dataloader():
        out.append(batch["image"])
        total += batch["image"].shape[0]
        if total >= n:
            break
    return torch.cat(out)[:n].float()


def _minibatches(images: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    while True:
        perm = torch.randperm(images.shape[0], generator=generator)
        for i in range(0, images.shape[0] - batch_size + 1, batch_size):
            yield images[perm[i : i + batch_size]]


def train_tokenizer(cfg: VQConfig, images: Tensor, steps: Optional[int] = None, progress: bool = True) -> tuple[MultiScaleVQVAE, dict]:
    """Train a :class:`MultiScaleVQVAE` on ``images`` (``[N,3,S,S]`` in [-1,1]); returns it (eval, frozen) and stats."""
    steps = cfg.train_steps if steps is None else steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MultiScaleVQVAE(cfg)
        model.check_image(images)
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train_lr, betas=(0.9, 0.95), weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.train_lr, total_steps=max(steps, 1), pct_start=0.05)
        batches = _minibatches(images, min(cfg.train_batch_size, images.shape[0]), gen)
        q = model.quantize
        model.train()
        t0 = time.time()
        it = range(steps)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="training the tiny VQ tokenizer (cached after this run)", leave=False)
        rec_loss = vq_loss = torch.zeros(())
        for step in it:
            x = next(batches)
            rec, vq_loss, _ = model(x)
            rec_loss = F.mse_loss(rec, x)
            loss = rec_loss + vq_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            # Restart dead codes from current encoder features (keeps the small codebook in use).
            if step % 50 == 49 and step < 0.8 * steps:
                with torch.no_grad():
                    hits = q.ema_vocab_hit_SV.sum(0)
                    dead = (hits < 0.03 * hits.mean()).nonzero().flatten()
                    if len(dead):
                        f = model.encode_f(x).permute(0, 2, 3, 1).reshape(-1, q.Cvae)
                        pick = torch.randint(0, f.shape[0], (len(dead),), generator=gen)
                        q.embedding.weight[dead] = f[pick] + 0.01 * f.std() * torch.randn(len(dead), q.Cvae, generator=gen)
                        q.ema_vocab_hit_SV[:, dead] = q.ema_vocab_hit_SV.mean()
            if progress and step % 50 == 0:
                it.set_postfix(rec=f"{rec_loss.item():.4f}", vq=f"{vq_loss.item():.4f}")
    model.eval().requires_grad_(False)
    with torch.no_grad():
        x = images[: min(256, images.shape[0])]
        recon = model.fhat_to_img(model.quantize.idx_to_fhat(model.img_to_idx(x)))
        used = torch.cat(model.img_to_idx(x), 1).unique().numel()
    stats = {"steps": steps, "seconds": time.time() - t0, "train_rec_mse": float(rec_loss), "eval_rec_mse": float(F.mse_loss(recon, x)),
             "codes_used": int(used), "vocab_size": cfg.vocab_size}
    return model, stats


def load_or_train_tokenizer(cfg: VQConfig, cache_dir: Optional[str | Path] = None, progress: bool = True,
                            images: Optional[Tensor] = None) -> MultiScaleVQVAE:
    """The tokenizer of ``cfg``: from ``cfg.checkpoint``; else the cached trained one (trained now if absent,
    when ``cfg.auto_train``); else seeded random weights."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(f"config 'model.tokenizer.checkpoint': file {path} not found; give a local VQVAE state dict")
        model = MultiScaleVQVAE(cfg)
        sd = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(sd.get("state_dict", sd), strict=True)
        except RuntimeError as err:
            raise ConfigError(f"config 'model.tokenizer.checkpoint': {path} does not match the tokenizer config: "
                              f"{' '.join(str(err).split())[:300]}") from None
        return model.eval().requires_grad_(False)
    if not cfg.auto_train:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return MultiScaleVQVAE(cfg).eval().requires_grad_(False)
    path = tokenizer_cache_path(cfg, cache_dir)
    with file_lock(path.with_suffix(".lock")):
        if not path.is_file():
            log.warning("No cached tokenizer at %s: training one on shapes (%d steps, a few minutes on CPU)", path, cfg.train_steps)
            if images is None:
                probe = MultiScaleVQVAE(cfg)
                images = shapes_images(cfg.train_samples, probe.image_size, seed=cfg.seed)
            model, stats = train_tokenizer(cfg, images, progress=progress)
            tmp = path.with_suffix(".pt.tmp")
            torch.save({"state_dict": model.state_dict(), "config": dataclasses.asdict(cfg), "stats": stats}, tmp)
            tmp.replace(path)
            log.warning("Trained tokenizer saved to %s: %s", path, stats)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = MultiScaleVQVAE(cfg)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval().requires_grad_(False)
