"""Train (and cache) the tiny multi-scale VQ tokenizer on a sample of the run's pool.

Random VQ codes are meaningless, so a STAR proxy without a tokenizer checkpoint uses one trained
here: reconstruction MSE + the VQ loss (commitment β and codebook terms), with dead codes restarted
from encoder features. It fits the data it will tokenize: ``VQConfig.train_data`` (the run's
``data`` node, set by :func:`lightning_alchemist.proxy.factory.fit_to_data`), or the embedded
``shapes`` when that is unset or is ``shapes``. The result is cached under
``<cache_root>/tokenizers/<fingerprint>.pt`` (fingerprint of the tokenizer config and the data's
identity, :func:`lightning_alchemist.data.sources.data_identity`), and a file lock keeps
concurrent processes from training it twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.paths import file_lock
from lightning_alchemist.proxy.star.tokenizer import MultiScaleVQVAE, VQConfig

log = logging.getLogger(__name__)

__all__ = ["tokenizer_fingerprint", "tokenizer_cache_path", "train_tokenizer", "load_or_train_tokenizer", "shapes_images",
           "pool_images", "tokenizer_data"]

_TRAIN_VERSION = 1
_ARCH_FIELDS = ("vocab_size", "z_channels", "ch", "ch_mult", "num_res_blocks", "using_sa", "using_mid_sa", "norm_groups", "dropout",
                "beta", "quant_resi", "share_quant_resi", "patch_nums")
_TRAIN_FIELDS = ("train_steps", "train_batch_size", "train_lr", "train_samples", "seed")


def _image_size(cfg: VQConfig) -> int:
    return int(cfg.patch_nums[-1] * 2 ** (len(cfg.ch_mult) - 1))


def tokenizer_data(cfg: VQConfig) -> Optional[dict[str, Any]]:
    """The data node the tokenizer fits (images resized to its side), or ``None`` for the embedded ``shapes``.

    Any ``shapes`` config maps to ``None``: one domain, one tokenizer (the cached one stays valid).
    """
    if not cfg.train_data:
        return None
    from lightning_alchemist.config import as_container, data_config

    node = dict(as_container(cfg.train_data))
    validated = data_config(node)
    if validated.name == "shapes" and validated.urls is None:
        return None
    return {**node, "image_size": _image_size(cfg)}


def _data_tag(cfg: VQConfig) -> str:
    node = tokenizer_data(cfg)
    if node is None:
        return "shapes"
    from lightning_alchemist.config import data_config
    from lightning_alchemist.data.sources import data_identity

    ident = data_identity(data_config(node), seed=cfg.seed)
    return "data-" + hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenizer_fingerprint(cfg: VQConfig, data_tag: Optional[str] = None) -> str:
    """Stable id of (architecture, training settings, data) — the cache file name.

    ``data_tag``: defaults to the identity of ``cfg.train_data`` (``"shapes"`` for the embedded
    ``shapes``, which keeps the fingerprint of tokenizers cached before ``train_data`` existed).
    """
    d = dataclasses.asdict(cfg)
    payload = {"v": _TRAIN_VERSION, "data": data_tag or _data_tag(cfg), **{k: d[k] for k in _ARCH_FIELDS + _TRAIN_FIELDS}}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def tokenizer_cache_path(cfg: VQConfig, cache_dir: Optional[str | Path] = None) -> Path:
    if cache_dir is None:
        from lightning_alchemist.paths import cache_root

        cache_dir = cache_root() / "tokenizers"
    return Path(cache_dir).expanduser() / f"{tokenizer_fingerprint(cfg)}.pt"


def pool_images(n: int, data_node: Any, seed: int = 0, batch_size: Optional[int] = None) -> Tensor:
    """Up to ``n`` images ``[n,3,S,S]`` in [-1,1] from the training split of ``data_node``'s pool (its data module, shuffled by ``seed``).

    ``batch_size``: loader batch (default ``n // 4``, at most 256; the loader drops a last partial
    batch, so a small pool still yields most of its images).
    """
    from lightning_alchemist.data.datamodule import build_datamodule

    batch = batch_size or min(256, max(1, n // 4))
    # plain shuffled images: a tokenizer needs no cluster-mixed order (and no cluster ids)
    dm = build_datamodule({**dict(data_node), "batch_size": batch, "batching": "shuffle"}, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    out, total = [], 0
    for batch in dm.train_dataloader():
        out.append(batch["image"])
        total += batch["image"].shape[0]
        if total >= n:
            break
    if not out:
        raise ConfigError(f"config 'data': no pool images to fit the tokenizer on (data={data_node.get('name')}); "
                          "check data.urls or pass model.tokenizer.checkpoint=PATH")
    return torch.cat(out)[:n].float()


def shapes_images(n: int, image_size: int, seed: int = 0, data_cfg: Optional[dict] = None) -> Tensor:
    """``n`` pool images ``[n,3,S,S]`` in [-1,1] from the embedded ``shapes`` dataset (its data module)."""
    return pool_images(n, {"name": "shapes", "image_size": image_size, **(data_cfg or {})}, seed=seed, batch_size=256)


def _minibatches(images: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    while True:
        perm = torch.randperm(images.shape[0], generator=generator)
        for i in range(0, images.shape[0] - batch_size + 1, batch_size):
            yield images[perm[i : i + batch_size]]


def train_tokenizer(cfg: VQConfig, images: Tensor, steps: Optional[int] = None, progress: bool = True) -> tuple[MultiScaleVQVAE, dict]:
    """Train a :class:`MultiScaleVQVAE` on ``images`` (``[N,3,S,S]`` in [-1,1]); returns it (eval, frozen) and stats."""
    from lightning_alchemist.runtime import fixed_threads

    steps = cfg.train_steps if steps is None else steps
    # one thread: the cached tokenizer must not depend on the thread count of the run that trained it first
    with torch.random.fork_rng(devices=[]), fixed_threads(1):
        torch.manual_seed(cfg.seed)
        model = MultiScaleVQVAE(cfg)
        model.check_image(images)
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.train_lr, betas=(0.9, 0.95), weight_decay=0.0)
        warmup = 0.05 if 0.05 * steps != 1 else 0.1  # OneCycleLR divides by pct_start * steps - 1 (steps=20 failed)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.train_lr, total_steps=max(steps, 1), pct_start=warmup)
        batches = _minibatches(images, min(cfg.train_batch_size, images.shape[0]), gen)
        q = model.quantize
        model.train()
        t0 = time.time()
        it = range(steps)
        if progress:
            from lightning_alchemist.runtime import progress_bar

            it = progress_bar(it, desc="training the tiny VQ tokenizer (cached after this run)", unit="step", leave=False)
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
            data = tokenizer_data(cfg)
            name = "shapes" if data is None else data.get("name", "data")
            log.warning("No cached tokenizer at %s: training one on %s (%d steps, a few minutes on CPU)", path, name, cfg.train_steps)
            if images is None:
                if data is None:
                    images = shapes_images(cfg.train_samples, MultiScaleVQVAE(cfg).image_size, seed=cfg.seed)
                else:
                    images = pool_images(cfg.train_samples, data, seed=cfg.seed)
            model, stats = train_tokenizer(cfg, images, progress=progress)
            tmp = path.with_suffix(".pt.tmp")
            torch.save({"state_dict": model.state_dict(), "config": dataclasses.asdict(cfg), "stats": {**stats, "data": name}}, tmp)
            tmp.replace(path)
            log.warning("Trained tokenizer saved to %s: %s", path, stats)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = MultiScaleVQVAE(cfg)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval().requires_grad_(False)
