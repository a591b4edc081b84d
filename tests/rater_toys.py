"""Toy proxy and toy data for the rater and scoring tests (tiny, CPU, deterministic).

The toy task has a known answer: K concepts, each a prototype image named by a two-word caption.
A clean sample's image is its caption's prototype plus noise; a *random-caption* sample carries
two random words instead. The toy proxy regresses image tokens from the caption, so under a
proxy trained on clean validation data mismatched samples keep a high loss and must rate lower.
"""

from __future__ import annotations

import zlib
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from lightning_alchemist.proxy.base import Batch, Encoded, RaterInputs, T2IProxy

WORDS_A = ["red", "green", "blue", "yellow"]
WORDS_B = ["circle", "square"]
CONCEPTS = [f"{a} {b}" for a in WORDS_A for b in WORDS_B]
NOISE_WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "elit", "sed", "magna", "tempor", "nulla", "porta", "fames"]


class ToyProxy(T2IProxy):
    """Frozen patch/word encoders; a trainable MLP predicts the image tokens from the caption."""

    frozen_attrs = ("word_emb",)  # the only weights encode() reads (seeded): its digest names the encodes

    def __init__(self, image_size: int = 8, patch: int = 4, text_dim: int = 16, vocab: int = 64, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.patch = patch
        self.num_tokens = (image_size // patch) ** 2
        self.token_dim = 3 * patch * patch
        self.vocab = vocab
        self.word_emb = nn.Embedding(vocab, text_dim)
        self.word_emb.weight.data = torch.randn(vocab, text_dim, generator=g)
        self.word_emb.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, self.num_tokens * self.token_dim))

    def _word_ids(self, caption: str, length: int = 4) -> list[int]:
        ids = [zlib.crc32(w.encode()) % (self.vocab - 1) + 1 for w in caption.split()][:length]
        return ids + [0] * (length - len(ids))

    def encode(self, batch: Batch) -> Encoded:
        with torch.no_grad():
            img = batch["image"].float()
            b, c, h, w = img.shape
            p = self.patch
            tokens = img.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * p * p)
            ids = torch.tensor([self._word_ids(cap) for cap in batch["caption"]], dtype=torch.long, device=img.device)
            mask = ids > 0
            text = self.word_emb(ids) * mask.unsqueeze(-1)
            pooled = text.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return {"key": list(batch["key"]), "tokens": tokens, "text": text, "mask": mask, "pooled": pooled}

    def per_sample_loss(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        pred = self.head(encoded["pooled"]).view_as(encoded["tokens"])
        return ((pred - encoded["tokens"]) ** 2).mean(dim=(1, 2))

    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        return RaterInputs(encoded["tokens"], encoded["text"], encoded["mask"], encoded["pooled"], None)


def prototypes(image_size: int = 8, seed: int = 123) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(CONCEPTS), 3, image_size, image_size, generator=g) * 2 - 1


def make_samples(n: int, mismatch: float, seed: int, prefix: str, image_size: int = 8, shard: str = "toy") -> list[dict[str, Any]]:
    """``n`` samples; a ``mismatch`` share (every k-th) carries a random two-word caption."""
    protos = prototypes(image_size)
    g = torch.Generator().manual_seed(seed)
    every = int(round(1 / mismatch)) if mismatch > 0 else 0
    out = []
    for i in range(n):
        c = int(torch.randint(len(CONCEPTS), (1,), generator=g))
        img = (protos[c] + 0.1 * torch.randn(protos[c].shape, generator=g)).clamp(-1, 1)
        bad = every > 0 and i % every == 0
        if bad:
            a, b = torch.randint(len(NOISE_WORDS), (2,), generator=g).tolist()
            cap = f"{NOISE_WORDS[a]} {NOISE_WORDS[b]}"
        else:
            cap = CONCEPTS[c]
        out.append({"key": f"{prefix}{i:06d}", "image": img, "caption": cap, "meta": {"mismatch": bad}, "shard": shard})
    return out


def collate(samples: list[dict[str, Any]]) -> Batch:
    return {
        "key": [s["key"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "meta": [s["meta"] for s in samples],
        "shard": [s["shard"] for s in samples],
    }


def loader(samples: list[dict[str, Any]], batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(samples, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g, drop_last=shuffle)


class ShardedToyPredict(IterableDataset):
    """Whole shards per rank (shard i -> rank i % world), samples in shard order, skipping finished shards."""

    def __init__(self, shards: dict[str, list[dict[str, Any]]], skip: set[str]) -> None:
        self.shards = shards
        self.skip = skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch.distributed as dist

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        for i, (stem, samples) in enumerate(sorted(self.shards.items())):
            if i % world == rank and stem not in self.skip:
                yield from samples


class ToyScoreData(pl.LightningDataModule):
    """Predict-only datamodule following the T2IDataModule contract (``skip_shards``)."""

    def __init__(self, num_shards: int = 6, per_shard: int = 20, batch_size: int = 8, seed: int = 7) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.shards = {}
        for s in range(num_shards):
            stem = f"shard-{s:04d}"
            self.shards[stem] = make_samples(per_shard, 0.5, seed + s, prefix=f"{stem}-", shard=f"/data/{stem}.tar")
        self.skip_shards: set[str] = set()

    def pool_shards(self) -> list[Any]:
        from types import SimpleNamespace

        return [SimpleNamespace(path=f"/data/{stem}.tar", stem=stem, num_samples=len(s)) for stem, s in sorted(self.shards.items())]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(ShardedToyPredict(self.shards, set(self.skip_shards)), batch_size=self.batch_size, collate_fn=collate)


class LinearToyProxy(T2IProxy):
    """Linear regression ``ℓ_i = (θᵀx_i − y_i)²`` behind the proxy interface (finite-difference tests).

    Batches are already encoded: ``{"key", "x" [B, D], "y" [B]}``; the rater would read ``x``.
    """

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim, dtype=torch.float64))

    def encode(self, batch: Batch) -> Encoded:
        return dict(batch)

    def per_sample_loss(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        return (encoded["x"] @ self.theta - encoded["y"]) ** 2

    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        x = encoded["x"].float()
        b = x.shape[0]
        return RaterInputs(x.unsqueeze(1), torch.zeros(b, 1, 1), torch.ones(b, 1, dtype=torch.bool), torch.zeros(b, 1), None)


def flipped_regression(n_pool: int = 32, n_val: int = 64, dim: int = 8, seed: int = 0) -> tuple[Encoded, Encoded, Tensor, Tensor]:
    """Pool where every other sample's target is flipped (a consistently wrong caption), clean val.

    Returns ``(pool, val, bad [n_pool] bool, theta_star)``.
    """
    g = torch.Generator().manual_seed(seed)
    theta_star = torch.randn(dim, generator=g, dtype=torch.float64)
    xp = torch.randn(n_pool, dim, generator=g, dtype=torch.float64)
    xv = torch.randn(n_val, dim, generator=g, dtype=torch.float64)
    bad = torch.arange(n_pool) % 2 == 0
    yp = xp @ theta_star + 0.05 * torch.randn(n_pool, generator=g, dtype=torch.float64)
    yp = torch.where(bad, -(xp @ theta_star), yp)
    yv = xv @ theta_star + 0.05 * torch.randn(n_val, generator=g, dtype=torch.float64)
    keys = [f"p{i}" for i in range(n_pool)]
    return {"key": keys, "x": xp, "y": yp}, {"key": [f"v{i}" for i in range(n_val)], "x": xv, "y": yv}, bad, theta_star
