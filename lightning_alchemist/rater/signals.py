"""Rater objectives: the per-sample signal each one ranks by, and the ends of its ranking.

Every objective turns the proxy's losses on a batch into a per-sample *signal*, higher = keep
(method.md §2.2, §10; issue 15):

- ``official``: the official rule, rater loss Σ_i w_i(φ)·sg(ℓ_i) through the batch softmax
  (paper Eq. 9, the code); its signal is −ℓ_i.
- ``regression``: the rater's logit regresses onto the batch-standardised −ℓ_i (the softmax only
  weights the proxy's pool term). Every sample teaches the rater, unlike the softmax rule whose
  gradient on a logit is ∝ its (often tiny) weight.
- ``contrast``: −c_i with c_i = ℓ_i − β·(ℓ̄_i(c′) − ℓ_i), ℓ̄_i(c′) the loss with the captions of
  ``partners`` other samples of the batch (rolled), mixed with the loss under the empty caption
  (its share ``null``): a caption that does not describe its image gains nothing over a foreign one
  (mismatch), a generic caption nothing over none (plain backgrounds).
- ``penalty``: ℓ_i(θ̂) − ℓ_i(θ), θ̂ a reference proxy trained on the pool (paper Eq. 6, cached):
  a density ratio between the clean validation data and the pool.

Each objective declares the ends of its ranking (:class:`RankingEnds`): whether the top holds
"too easy" samples to drop (a Shift-Gaussian head) or the cleanest data, and that the bottom is
noise. Scoring writes the declaration into the ratings files; ``ShiftGaussian(head="auto")`` reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from lightning_alchemist.proxy.base import Encoded, T2IProxy

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_ENDS",
    "Objective",
    "RANKING_KEY",
    "RankingEnds",
    "caption_gain",
    "null_captions",
    "ends_of",
    "proxy_signal",
    "regression_loss",
    "rolled_captions",
    "standardise",
]

Objective = Literal["official", "regression", "contrast", "penalty"]
OBJECTIVES: tuple[str, ...] = ("official", "regression", "contrast", "penalty")

RANKING_KEY = b"lightning_alchemist.ranking"
"""Parquet schema-metadata key of the ratings files holding the objective's :class:`RankingEnds` (JSON)."""

# Encoded entries that carry the caption (rolled together to pair an image with another caption).
TEXT_ENTRIES = ("text", "text_mask", "pooled")


@dataclass(frozen=True)
class RankingEnds:
    """What the two ends of an objective's ranking hold (highest rating first).

    Attributes:
        objective: the objective that declared it.
        head: ``easy``: the top holds too-easy samples (plain backgrounds, copies of what the proxy
            memorised) that a selection should drop; ``clean``: the top is the cleanest data, keep it.
        tail: ``noise``: the bottom holds samples the proxy cannot fit (noise, wrong captions).
    """

    objective: str
    head: Literal["easy", "clean"]
    tail: Literal["noise"] = "noise"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "RankingEnds":
        d = json.loads(text)
        return cls(str(d["objective"]), d["head"], d.get("tail", "noise"))


# Declared from benchmarks/rater_signal.py on shapes (see benchmarks/results/rater_signal.md):
# a likelihood signal (−ℓ) rates plain backgrounds above clean data (the "too easy" head the
# paper drops); the caption contrast and the penalty gap rate them low, so their top is clean.
OBJECTIVE_ENDS: dict[str, RankingEnds] = {
    "official": RankingEnds("official", "easy"),
    "regression": RankingEnds("regression", "easy"),
    "contrast": RankingEnds("contrast", "clean"),
    "penalty": RankingEnds("penalty", "clean"),
}


def ends_of(objective: str) -> RankingEnds:
    """The declared ranking ends of ``objective``."""
    if objective not in OBJECTIVE_ENDS:
        raise ValueError(f"unknown rater objective '{objective}', expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVE_ENDS[objective]


def standardise(signal: Tensor, eps: float = 1e-6) -> Tensor:
    """``(s − mean_B) / std_B`` over the batch (zeros for a constant batch or a single sample)."""
    if signal.shape[0] < 2:
        return torch.zeros_like(signal)
    centred = signal - signal.mean()
    return centred / centred.pow(2).mean().sqrt().clamp_min(eps)


def regression_loss(logits: Tensor, signal: Tensor) -> Tensor:
    """Mean squared error of the rater's logits against the batch-standardised signal (detached)."""
    return (logits.float() - standardise(signal.detach().float())).pow(2).mean()


def rolled_captions(encoded: Encoded, shift: int) -> Encoded:
    """A copy of ``encoded`` whose sample i carries the caption of sample (i − shift) mod B."""
    out = dict(encoded)
    for name in TEXT_ENTRIES:
        if name in encoded and isinstance(encoded[name], Tensor):
            out[name] = torch.roll(encoded[name], shifts=shift, dims=0)
    return out


def partner_shifts(batch_size: int, partners: int) -> list[int]:
    """``min(partners, B − 1)`` distinct roll shifts, spread over the batch (no sample is its own partner)."""
    k = min(partners, batch_size - 1)
    if k <= 0:
        return []
    step = (batch_size - 1) / k
    return sorted({1 + int(i * step) for i in range(k)})


GeneratorFactory = Callable[[int], Optional[torch.Generator]]


def null_captions(proxy: T2IProxy, encoded: Encoded) -> Optional[Encoded]:
    """A copy of ``encoded`` where every sample sees the empty caption (None if the proxy has none)."""
    b = len(encoded.get("key") or []) or int(next(v for v in encoded.values() if isinstance(v, Tensor)).shape[0])
    try:
        return proxy.drop_captions(encoded, torch.ones(b, dtype=torch.bool))
    except NotImplementedError:
        return None


def caption_gain(
    proxy: T2IProxy, encoded: Encoded, losses: Tensor, partners: int, generator: GeneratorFactory = lambda i: None,
    null: float = 0.0,
) -> Tensor:
    """ℓ̄_i(c′) − ℓ_i ``[B]``: the mean loss with ``partners`` rolled captions minus the true-caption loss;
    with ``null`` > 0, ℓ̄_i(c′) is ``(1 − null)·`` that mean ``+ null·`` the empty-caption loss (``null`` in [0, 1];
    a proxy without an empty caption uses the rolled mean alone)."""
    if isinstance(null, bool):  # the former switch: the empty caption at half the weight
        null = 0.5 if null else 0.0
    null = float(null)
    if not 0.0 <= null <= 1.0:
        raise ValueError(f"caption_gain: the empty caption's share 'null' must be in [0, 1], got {null}")
    shifts = partner_shifts(int(losses.shape[0]), partners)
    # the same noise/timesteps as the true-caption pass (generator 0), so only the caption differs
    foreign = [proxy.per_sample_loss(rolled_captions(encoded, s), generator=generator(0)) for s in shifts]
    rolled = torch.stack(foreign).mean(0) if foreign else None
    empty = None
    if null > 0:
        enc_null = null_captions(proxy, encoded)
        empty = proxy.per_sample_loss(enc_null, generator=generator(0)) if enc_null is not None else None
    if rolled is None and empty is None:
        return torch.zeros_like(losses)
    if rolled is None or empty is None:
        return (rolled if rolled is not None else empty) - losses
    return (1.0 - null) * rolled + null * empty - losses


def proxy_signal(
    objective: str,
    proxy: T2IProxy,
    encoded: Encoded,
    beta: float = 4.0,
    partners: int = 3,
    reference: Optional[T2IProxy] = None,
    generator: GeneratorFactory = lambda i: None,
    losses: Optional[Tensor] = None,
    null: float = 0.25,
) -> Tensor:
    """The objective's per-sample signal ``[B]`` under ``proxy`` (no grad; higher = keep).

    Args:
        objective: one of :data:`OBJECTIVES`.
        proxy: the (warmed-up) proxy.
        encoded: one encoded batch (contrast pairs its samples' captions within it).
        beta: weight of the caption gain (``contrast``).
        partners: rolled captions the gain is averaged over (``contrast``).
        null: the empty caption's share of the partners' loss (``contrast``; 0 = not a partner).
        reference: the pool-trained reference proxy (``penalty``; required there).
        generator: fixed random streams of the step (noise, timesteps of diffusion proxies).
        losses: ℓ_i already computed for this batch (saves a forward).
    """
    with torch.no_grad():
        loss = proxy.per_sample_loss(encoded, generator=generator(0)) if losses is None else losses.detach()
        if objective in ("official", "regression"):
            return -loss
        if objective == "contrast":
            return -(loss - beta * caption_gain(proxy, encoded, loss, partners, generator, null=null))
        if objective == "penalty":
            if reference is None:
                raise ValueError("rater objective 'penalty' needs the reference proxy (a pool warm-up); none was given")
            return reference.per_sample_loss(encoded, generator=generator(0)) - loss
    raise ValueError(f"unknown rater objective '{objective}', expected one of {', '.join(OBJECTIVES)}")
