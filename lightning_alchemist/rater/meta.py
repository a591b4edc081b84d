"""Meta-gradient variants: how the rater's loss is built from the proxy's training signal.

Each variant maps the differentiable batch weights ``w(φ)`` (from the rater) and the step's
:class:`MetaContext` to a scalar rater loss whose gradient w.r.t. the rater is the update
direction (method.md §2.2, §8 A1, §9):

- ``first_order`` (official code, paper Eq. 9): Σ_i w_i · sg(ℓ_i(θ_k)).
- ``penalty`` (paper Eq. 6, SEAL): Σ_i w_i · sg(ℓ_i(θ_k) − ℓ_i(θ̂_k)), with a reference proxy θ̂
  trained on the weighted pool loss alone.
- ``unrolled`` (DataRater): L_val(θ_T(φ)) after T functional SGD steps on the weighted pool loss,
  differentiated exactly (second order) w.r.t. φ through ``torch.func.functional_call``.

No variant lets gradient reach the proxy's parameters: first_order/penalty use detached losses;
unrolled steps from detached copies of θ_k.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import Encoded, T2IProxy
from lightning_alchemist.rater.config import RaterConfig

__all__ = [
    "FirstOrder",
    "MetaContext",
    "MetaGradient",
    "Penalty",
    "Unrolled",
    "build_meta_gradient",
    "weighted_pool_loss",
]

GeneratorFactory = Callable[[int], Optional[torch.Generator]]


def weighted_pool_loss(weights: Tensor, losses: Tensor, legacy_mean_over_batch: bool = False) -> Tensor:
    """Σ_i w_i ℓ_i; the official code's (1/B) Σ_i w_i ℓ_i with ``legacy_mean_over_batch``."""
    total = (weights * losses).sum()
    return total / losses.shape[0] if legacy_mean_over_batch else total


@dataclass
class MetaContext:
    """What one rater-training step knows when the rater's loss is built.

    Attributes:
        proxy: the proxy at θ_k (before this step's proxy update).
        pool: encoded pool batch; ``val``: encoded validation batch.
        pool_loss: ℓ_i(θ_k) on the pool batch, detached ``[B]``.
        generator: ``generator(i)`` gives the i-th fixed random stream of this step (or None), so
            every pass over a batch sees the same noise/timesteps.
    """

    proxy: T2IProxy
    pool: Encoded
    val: Encoded
    pool_loss: Tensor
    generator: GeneratorFactory = lambda i: None


class MetaGradient(nn.Module):
    """Base class: a rater loss from weights; optional state (a reference proxy) and its own step."""

    name = "base"

    def __init__(self, cfg: RaterConfig) -> None:
        super().__init__()
        self.legacy_mean = cfg.legacy_mean_over_batch

    def rater_loss(self, weights: Tensor, ctx: MetaContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference_parameters(self) -> list[nn.Parameter]:
        """Parameters that need their own optimiser (penalty's reference proxy); none by default."""
        return []

    def reference_loss(self, weights: Tensor, ctx: MetaContext) -> Optional[Tensor]:
        """Loss of the variant's own model for this step (None when it has none)."""
        return None


class FirstOrder(MetaGradient):
    """Official rule: rater loss Σ_i w_i · sg(ℓ_i(θ_k)) (raises the weight of below-average losses)."""

    name = "first_order"

    def rater_loss(self, weights: Tensor, ctx: MetaContext) -> Tensor:
        return weighted_pool_loss(weights, ctx.pool_loss.detach(), self.legacy_mean)


class Penalty(MetaGradient):
    """Paper Eq. 6: signal ℓ_i(θ) − ℓ_i(θ̂) with θ̂ a reference proxy trained on Σ w_i ℓ_i alone.

    θ̂ starts as a copy of the proxy at construction (the paper starts θ from θ̂). Its per-sample
    losses of the current step are cached by :meth:`rater_loss` for :meth:`reference_loss`.
    """

    name = "penalty"

    def __init__(self, cfg: RaterConfig, proxy: T2IProxy) -> None:
        super().__init__(cfg)
        self.reference = copy.deepcopy(proxy)
        self._ref_loss: Optional[Tensor] = None

    def reference_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.reference.parameters() if p.requires_grad]

    def _reference_losses(self, ctx: MetaContext) -> Tensor:
        if self._ref_loss is None:
            self._ref_loss = self.reference.per_sample_loss(ctx.pool, generator=ctx.generator(0))
        return self._ref_loss

    def rater_loss(self, weights: Tensor, ctx: MetaContext) -> Tensor:
        gap = ctx.pool_loss.detach() - self._reference_losses(ctx).detach()
        return weighted_pool_loss(weights, gap, self.legacy_mean)

    def reference_loss(self, weights: Tensor, ctx: MetaContext) -> Optional[Tensor]:
        loss = weighted_pool_loss(weights.detach(), self._reference_losses(ctx), self.legacy_mean)
        self._ref_loss = None
        return loss


class _LossCall(nn.Module):
    """Makes ``proxy.per_sample_loss`` the ``forward`` so ``functional_call`` can swap its parameters."""

    def __init__(self, proxy: T2IProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def forward(self, encoded: Encoded, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.proxy.per_sample_loss(encoded, generator=generator)


class Unrolled(MetaGradient):
    """Exact hypergradient of L_val through ``steps`` functional SGD steps on Σ w_i ℓ_i.

    Only parameters matching ``patterns`` (fnmatch over ``named_parameters``; empty = all
    trainable) move in the inner steps: restrict to LoRA or the last blocks on real proxies.
    Needs double backward through ``per_sample_loss``; not usable under DDP (pytorch#63929).
    """

    name = "unrolled"

    def __init__(self, cfg: RaterConfig) -> None:
        super().__init__(cfg)
        self.steps = cfg.unrolled_steps
        self.inner_lr = cfg.unrolled_inner_lr
        self.patterns = list(cfg.unrolled_params)

    def selected(self, proxy: T2IProxy) -> dict[str, Tensor]:
        """The proxy parameters the inner steps move (must match at least one)."""
        chosen = {
            n: p
            for n, p in proxy.named_parameters()
            if p.requires_grad and (not self.patterns or any(fnmatch.fnmatch(n, pat) for pat in self.patterns))
        }
        if not chosen:
            raise ConfigError(
                f"config 'rater.unrolled_params': {self.patterns} match no trainable proxy parameter; "
                "use fnmatch patterns over the proxy's named_parameters (e.g. 'blocks.1.*')"
            )
        return chosen

    def rater_loss(self, weights: Tensor, ctx: MetaContext) -> Tensor:
        # Fused attention kernels (flash, memory-efficient) have no double backward: use the math one.
        with sdpa_kernel([SDPBackend.MATH]):
            return self._unrolled_val_loss(weights, ctx)

    def _unrolled_val_loss(self, weights: Tensor, ctx: MetaContext) -> Tensor:
        call = _LossCall(ctx.proxy)
        # Detached leaf copies of θ_k: gradient reaches φ (through the weights) but never the proxy.
        params = {f"proxy.{n}": p.detach().requires_grad_(True) for n, p in self.selected(ctx.proxy).items()}
        for t in range(self.steps):
            losses = functional_call(call, params, (ctx.pool,), {"generator": ctx.generator(t)})
            inner = weighted_pool_loss(weights, losses, self.legacy_mean)
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
            params = {
                n: (p - self.inner_lr * g) if g is not None else p for (n, p), g in zip(params.items(), grads)
            }
        val = functional_call(call, params, (ctx.val,), {"generator": ctx.generator(self.steps)})
        return val.mean()


def build_meta_gradient(cfg: RaterConfig, proxy: T2IProxy) -> MetaGradient:
    """The variant named by ``cfg.meta_gradient``."""
    if cfg.meta_gradient == "first_order":
        return FirstOrder(cfg)
    if cfg.meta_gradient == "penalty":
        return Penalty(cfg, proxy)
    if cfg.meta_gradient == "unrolled":
        return Unrolled(cfg)
    raise ConfigError(f"config 'rater.meta_gradient': unknown variant '{cfg.meta_gradient}'")
