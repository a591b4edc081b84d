"""Pruning strategies: which ``round(keep · N)`` of N rated samples to train on.

Every strategy ranks samples by rating, highest first (ties: file order), with percentile
``u = rank / N``, and is deterministic for a seed on every machine and rank. Each is a dataclass
whose fields are its parameters, so it is built from the Hydra ``selection`` group as is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import pyarrow as pa

from lightning_alchemist.config import Choice
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.selection.draw import make_rng, rank_gumbel_top_k, rank_order
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings

__all__ = [
    "STRATEGIES",
    "Block",
    "BottomK",
    "Curriculum",
    "Gsample",
    "Random",
    "ShiftGaussian",
    "Strategy",
    "TopK",
    "build_strategy",
    "num_kept",
]


def _torch_threads() -> Optional[int]:
    """torch's intra-op thread count in this process, if torch is loaded (selection itself never imports it)."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def num_kept(keep: float, n: int) -> int:
    """``round(keep · n)``, after checking ``0 < keep <= 1``."""
    if not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ConfigError(f"config 'keep': got {keep!r}, expected a fraction 0 < keep <= 1 (1.0 keeps everything)")
    k = round(keep * n)
    if k == 0:
        raise ConfigError(f"config 'keep': {keep} of {n} rated samples keeps none; raise keep")
    return k


@dataclass
class Strategy:
    """Base class: subclasses implement :meth:`_pick` on the rank order."""

    name: ClassVar[str] = "strategy"

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def select(self, ratings: Ratings, keep: float, seed: int = 0) -> Selection:
        """Choose ``round(keep · len(ratings))`` samples; returns a :class:`Selection` with weight 1 each."""
        n = len(ratings)
        k = num_kept(keep, n)
        picked = self._pick(ratings, k, seed)
        if picked.dtype == bool:
            mask = picked
        else:
            mask = np.zeros(n, dtype=bool)
            mask[picked] = True  # a mask, not a sort: O(N), and filter beats take
        indices = np.flatnonzero(mask)
        assert len(indices) == k, f"{self.name} picked {len(indices)} of {k}"
        return Selection(
            keys=ratings.keys.filter(pa.array(mask)),
            weights=np.ones(k),
            meta=self._meta(ratings, keep, seed, k),
            indices=indices,
        )

    def _meta(self, ratings: Ratings, keep: float, seed: int, k: int) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "params": self.params(),
            "keep": float(keep),
            "seed": int(seed),
            "num_rated": len(ratings),
            "num_kept": int(k),
            "ratings_fingerprint": ratings.fingerprint,
            "scoring_fingerprints": list(ratings.scoring_fingerprints),
            # reproducibility: ratings (and so selections) can differ with the scorer's thread count
            "scoring_torch_threads": list(ratings.scoring_threads),
            "torch_threads": _torch_threads(),
        }

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:  # pragma: no cover - abstract
        """The picked rows: their positions, or a boolean mask over all rows."""
        raise NotImplementedError


def _check_fraction(name: str, value: float, low_open: bool = False) -> None:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise ConfigError(f"config 'selection.{name}': got {value}, expected a fraction in {'(0, 1]' if low_open else '[0, 1]'}")


class HeadMode(Choice):
    """What the top of a ranking holds, for :class:`ShiftGaussian` (see its docstring)."""

    auto = "auto"
    drop = "drop"
    keep = "keep"


HEAD_MODES = HeadMode.values()


@dataclass
class ShiftGaussian(Strategy):
    """Alchemist's Shift-Gsample: drop the head ``u < n``, draw the rest ∝ N(u; mu, sigma) without replacement.

    When ``keep > 1 − n`` the head shrinks to ``1 − keep`` (the rest is then kept whole).
    The draw is Gumbel-top-k: exact, O(N), seeded; its noise is drawn per row in file order, and
    :func:`~lightning_alchemist.selection.draw.rank_gumbel_top_k` avoids sorting all N ratings.

    ``head`` says what the top of the ranking holds: ``drop`` (too-easy samples: the head ``n`` is
    dropped and the Gaussian sits at ``mu``), ``keep`` (the cleanest data: nothing is dropped and the
    Gaussian sits at the top, ``u = 0``, so the noisy tail is avoided), or ``auto`` (default): what
    the ratings' objective declared (:attr:`Ratings.ranking`, written by the scorer), ``drop`` when
    they declare nothing (the official rule's likelihood ranking).

    ``sigma`` (default ``None``) follows the head mode too: 0.2 (:attr:`DROP_SIGMA`) around ``mu`` when
    the head is dropped, 0.1 (:attr:`KEEP_SIGMA`) from the top when it is kept. At keep 0.5 a soft top-K
    of width 0.2 draws about 8 % of its samples from the bottom half of the ranking, where the noisy
    tail is; 0.1 draws 2 %: on both embedded datasets it kept 2-3 points fewer mismatched captions (about
    what an exact top-K keeps) and trained a target no worse on either (README, ``selection_sigma.md``).
    A number applies in both modes.
    """

    n: float = 0.2
    mu: float = 0.6
    sigma: Optional[float] = None
    head: HeadMode = HeadMode.auto
    name: ClassVar[str] = "shift_gauss"
    DROP_SIGMA: ClassVar[float] = 0.2
    KEEP_SIGMA: ClassVar[float] = 0.1

    def __post_init__(self) -> None:
        _check_fraction("n", self.n)
        if self.sigma is not None and not self.sigma > 0:
            raise ConfigError(f"config 'selection.sigma': got {self.sigma}, expected > 0")
        if self.head not in HEAD_MODES:
            raise ConfigError(f"config 'selection.head': got '{self.head}', expected one of {', '.join(HEAD_MODES)}")

    def resolved(self, ratings: Optional[Ratings]) -> "ShiftGaussian":
        """This strategy with ``head`` resolved against the ratings' declared ranking ends.

        ``keep`` gives ``n = 0, mu = 0``; ``drop`` the configured ``n, mu``; an unset ``sigma`` becomes
        :attr:`KEEP_SIGMA` or :attr:`DROP_SIGMA`.
        """
        mode = self.head
        if mode == "auto":
            declared = (getattr(ratings, "ranking", None) or {}).get("head")
            mode = "keep" if declared == "clean" else "drop"
        if mode == "keep":
            sigma = self.KEEP_SIGMA if self.sigma is None else self.sigma
            return dataclasses.replace(self, n=0.0, mu=0.0, sigma=sigma, head="keep")
        sigma = self.DROP_SIGMA if self.sigma is None else self.sigma
        return dataclasses.replace(self, sigma=sigma, head="drop")

    def head_size(self, n_items: int, k: int) -> int:
        """How many top-ranked samples are dropped outright (with ``head`` resolved)."""
        head = math.ceil(self.n * n_items - 1e-9)  # ranks r with r / N < n
        return max(0, min(head, n_items - k))

    def log_weights(self, u: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Unnormalised log-probability of percentile ``u`` (the head is handled separately; call on :meth:`resolved`)."""
        if self.sigma is None:
            raise ValueError("ShiftGaussian.log_weights: sigma is unset until the head mode is resolved; "
                             "call it on strategy.resolved(ratings)")
        z = u if inplace else np.array(u, dtype=np.float64)
        z -= self.mu
        z *= z
        z *= -1.0 / (2.0 * self.sigma**2)
        return z

    def soft(self, ratings: Ratings, keep: float, seed: int = 0) -> Selection:
        """Every sample outside the head with its Gaussian weight, for a fresh draw each epoch.

        Use with ``DataSelectionCallback(mode="weighted")``: each epoch draws ``round(keep · N)``
        samples without replacement ∝ weight, i.e. a new Shift-Gaussian selection per epoch.
        """
        eff = self.resolved(ratings)
        n_items = len(ratings)
        k = num_kept(keep, n_items)
        order = rank_order(ratings.ratings)
        head = eff.head_size(n_items, k)
        weights = np.zeros(n_items)
        u = np.arange(head, n_items, dtype=np.float64) / n_items
        weights[order[head:]] = np.exp(eff.log_weights(u))
        meta = self._meta(ratings, keep, seed, k)
        meta.update(strategy=f"{self.name}_soft", num_samples=k)
        return Selection(ratings.keys, weights, meta, indices=np.arange(n_items))

    def log_weight_of_rank(self, ranks: np.ndarray, n_items: int) -> np.ndarray:
        """:meth:`log_weights` at ``u = rank / N`` (float64 ranks, consumed), as the draw evaluates it."""
        ranks *= 1.0 / n_items
        return self.log_weights(ranks, inplace=True)

    def peak_rank(self, n_items: int) -> int:
        """The first rank whose ``u − mu`` is >= 0 in floating point: weights rise before it, fall from it on."""
        lo, hi = 0, n_items
        while lo < hi:  # (r * (1/N)) - mu is monotone in r under IEEE rounding
            mid = (lo + hi) // 2
            if float(mid) * (1.0 / n_items) - self.mu >= 0:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _meta(self, ratings: Ratings, keep: float, seed: int, k: int) -> dict[str, Any]:
        meta = super()._meta(ratings, keep, seed, k)
        # record what was applied (n, mu after the head mode), what was asked, and what the ratings declared
        meta["params"] = {**self.resolved(ratings).params(), "head_asked": self.head,
                          "head_declared": (getattr(ratings, "ranking", None) or {}).get("head")}
        return meta

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:
        eff = self.resolved(ratings)
        n_items = len(ratings)
        return rank_gumbel_top_k(
            ratings.ratings, k, lambda r: eff.log_weight_of_rank(r, n_items), eff.peak_rank(n_items),
            eff.head_size(n_items, k), make_rng(seed),
        )


@dataclass
class Gsample(ShiftGaussian):
    """The unshifted baseline: a Gaussian centred on the middle percentile, no head dropped."""

    n: float = 0.0
    mu: float = 0.5
    sigma: float = 0.2
    head: str = "drop"  # the baseline ignores declared ends: a Gaussian at the middle, always
    name: ClassVar[str] = "gsample"


@dataclass
class TopK(Strategy):
    """The ``k`` highest-rated samples."""

    name: ClassVar[str] = "topk"

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:
        return rank_order(ratings.ratings)[:k]


@dataclass
class BottomK(Strategy):
    """The ``k`` lowest-rated samples."""

    name: ClassVar[str] = "bottomk"

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:
        return rank_order(ratings.ratings)[len(ratings) - k :]


@dataclass
class Block(Strategy):
    """A contiguous band of percentiles ``[start, start + keep)`` (the paper's s0…s80 blocks).

    With ``centre`` set, the band is ``[centre − keep/2, centre + keep/2)`` instead (``start`` is
    then unused), moved inside ``[0, 1]`` where it would run past an end: one config for every
    ``keep``. ``centre=0.5`` keeps the middle of the ranking (``selection=middle``), the band a
    team keeps by compressed size or entropy, dropping both the flat and the noisy ends.
    """

    start: float = 0.4
    centre: Optional[float] = None
    name: ClassVar[str] = "block"

    def __post_init__(self) -> None:
        _check_fraction("start", self.start)
        if self.centre is not None:
            _check_fraction("centre", self.centre)

    def first_rank(self, n_items: int, k: int) -> int:
        """The first rank of the band of ``k`` of ``n_items``."""
        if self.centre is not None:
            return min(max(round(self.centre * n_items - k / 2), 0), n_items - k)
        return round(self.start * n_items)

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:
        n_items = len(ratings)
        first = self.first_rank(n_items, k)
        if first + k > n_items:
            raise ConfigError(
                f"config 'selection.start': block [{self.start}, {self.start} + keep) runs past the last "
                f"percentile ({first} + {k} > {n_items}); lower selection.start to at most 1 - keep"
            )
        return rank_order(ratings.ratings)[first : first + k]


@dataclass
class Random(Strategy):
    """``k`` samples uniformly at random, without replacement."""

    name: ClassVar[str] = "random"

    def _pick(self, ratings: Ratings, k: int, seed: int) -> np.ndarray:
        return make_rng(seed).choice(len(ratings), size=k, replace=False)


@dataclass
class Curriculum(Strategy):
    """Rating bins whose sampling weights move from the top bins to the bottom ones over epochs.

    ``select`` keeps every rated sample with its bin; each epoch a sampler draws
    ``round(keep · N)`` of them without replacement ∝ :func:`~lightning_alchemist.selection.schedule.curriculum_bin_weights`.
    """

    num_bins: int = 10
    # Epochs over which the peak moves; None: the training run's max_epochs (set by the callback).
    epochs: Optional[int] = None
    name: ClassVar[str] = "curriculum"

    def __post_init__(self) -> None:
        if self.num_bins < 1 or (self.epochs is not None and self.epochs < 1):
            raise ConfigError("config 'selection.num_bins' and 'selection.epochs' must be >= 1 (epochs may be null)")

    def select(self, ratings: Ratings, keep: float, seed: int = 0) -> Selection:
        n_items = len(ratings)
        k = num_kept(keep, n_items)
        order = rank_order(ratings.ratings)
        bins = np.empty(n_items, dtype=np.int16)
        bins[order] = (np.arange(n_items, dtype=np.int64) * self.num_bins // n_items).astype(np.int16)
        meta = self._meta(ratings, keep, seed, k)
        meta["schedule"] = {"name": "curriculum", "num_bins": self.num_bins, "epochs": self.epochs, "num_samples": k}
        return Selection(ratings.keys, np.ones(n_items), meta, bins=bins, indices=np.arange(n_items))

    def epoch_indices(self, selection: Selection, epoch: int, seed: int = 0, epochs: Optional[int] = None) -> np.ndarray:
        """The rows drawn for ``epoch`` (sorted); what a sampler in weighted mode uses."""
        from lightning_alchemist.selection.draw import weighted_draw

        k = selection.samples_per_epoch()
        return np.sort(weighted_draw(selection.epoch_weights(epoch, epochs), k, False, make_rng(seed, epoch)))


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ShiftGaussian, Gsample, TopK, BottomK, Block, Random, Curriculum)
}


def build_strategy(cfg: Any) -> Optional[Strategy]:
    """A strategy from the ``selection`` config node (``name`` plus parameters); ``None`` for ``name: none``.

    Raises:
        ConfigError: unknown name, unknown parameter or bad value (one line).
    """
    from lightning_alchemist.config import as_container, to_dataclass

    if isinstance(cfg, Strategy):
        return cfg
    node = dict(as_container(cfg) or {})
    name = node.pop("name", None)
    if name in (None, "none"):
        return None
    if name not in STRATEGIES:
        raise ConfigError(f"config 'selection.name': unknown strategy '{name}', expected one of {sorted(STRATEGIES) + ['none']}")
    return to_dataclass(node, STRATEGIES[name], "selection")

