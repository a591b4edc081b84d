"""Proxy warm-up (paper Eq. 4): train the proxy on one split first, stop early, cache the result.

A cold proxy has no signal to rate by (its caption gain is ~0 after 200 steps, issue 15), so the
proxy first trains on the validation split alone (or, for the penalty reference, on the pool). A
small split is overfitted quickly, so a seeded held-out part of it decides when to stop: the
weights with the lowest held-out loss are kept. The trained weights of the proxy's trainable
module are cached under ``<cache root>/warmup/<fingerprint>.pt`` (fingerprint: the proxy's initial
weights, the data's encodes, the warm-up config), so a second call loads them and trains nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from lightning_alchemist.config import Choice
from lightning_alchemist.paths import cache_root, file_lock
from lightning_alchemist.proxy.base import T2IProxy
from lightning_alchemist.rater.encodes import EncodedSet
from lightning_alchemist.rater.fingerprint import module_digest

__all__ = ["WARMUP_CONTINUATIONS", "WarmupConfig", "WarmupContinuation", "warmup_lr_factor", "WarmupResult", "held_out_split", "warm_up_proxy", "write_warmup_metrics"]

log = logging.getLogger(__name__)

WARMUP_VERSION = 1


class WarmupContinuation(Choice):
    """What the proxy does after its warm-up."""

    frozen = "frozen"
    joint = "joint"


WARMUP_CONTINUATIONS = WarmupContinuation.values()


@dataclass
class WarmupConfig:
    """Warm-up of the proxy before rating (schema of ``rater.warmup``); ``steps: 0`` = none (official code).

    Measured on ``shapes`` (star_tiny): the caption gain grows 0.04 -> 0.12 -> 0.28 nats at
    200/400/800 steps; held-out early stopping keeps a small split from being memorised. ``steps`` is a
    cap; early stopping ends the warm-up: with the 256-wide text encoder, shapes' held-out loss was still
    falling at 800 (2.66) and stopped improving at 1150 (2.53; mismatch AUC 0.90 -> 0.93), glyphs' at 700
    either way (``benchmarks/results/rater_signal_warmup1600.md``).
    """

    steps: int = 2000
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 2.0
    ramp_steps: int = 20  # linear lr ramp from 0 at the start
    # lr after the ramp: linear from lr to final_factor x lr at the last step (1.0 = constant).
    final_factor: float = 1.0
    # Share of training captions replaced by the empty caption (the official CFG drop is 0.1). Off:
    # measured on shapes (5k pool, 800 steps), a proxy that never saw the empty caption separates
    # generic-caption samples by the contrast's empty-caption partner far better (AUC plain 0.98
    # for ℓ(∅) − ℓ alone, 0.73 with drop 0.1), since ℓ(∅) stays high only where the caption informs.
    caption_drop: float = 0.0
    # Share of the split held out for early stopping (never trained on); 0 = train on all, keep the last.
    holdout: float = 0.2
    eval_every: int = 50
    # Stop after this many evaluations without a better held-out loss; 0 = never stop early.
    patience: int = 4
    seed: int = 0
    # Save a resumable state every this many steps (``<cache>.partial.pt``), so a killed warm-up continues
    # where it stopped (``resume=auto``); 0 = never. Not part of the result's fingerprint.
    checkpoint_every: int = 100
    # After the warm-up: ``frozen`` = the proxy does not train further (direct scoring; rater-only
    # training, official fixVar); ``joint`` = it keeps training with the rater (paper Eq. 5).
    continuation: WarmupContinuation = WarmupContinuation.frozen


@dataclass
class WarmupResult:
    """What a warm-up did: ``cached`` (loaded, nothing trained), steps run, best step and losses, and the
    seconds the training took (when it ran, also for a cached result)."""

    cached: bool
    path: str
    steps_run: int
    best_step: int
    best_holdout_loss: float
    train_loss: float
    seconds: float
    history: list[tuple[int, float, float]]  # (step, held-out loss, running train loss) per evaluation

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def warmup_lr_factor(step: int, cfg: WarmupConfig) -> float:
    """The lr multiplier at ``step`` (1-based): a linear ramp over ``ramp_steps``, then linear to ``final_factor``."""
    ramp = max(cfg.ramp_steps, 1)
    if step < ramp:
        return step / ramp
    span = max(cfg.steps - ramp, 1)
    return 1.0 + (cfg.final_factor - 1.0) * min(1.0, (step - ramp) / span)


def held_out_split(n: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train rows, held-out rows)`` of a seeded permutation of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(round(holdout * n)) if holdout > 0 else 0
    if holdout > 0 and n > 1:
        k = min(max(k, 1), n - 1)
    return perm[k:], perm[:k]


def _fingerprint(proxy: T2IProxy, data_fp: str, cfg: WarmupConfig, role: str) -> str:
    conf = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("continuation", "checkpoint_every")}
    payload = {"v": WARMUP_VERSION, "proxy": type(proxy).__qualname__, "weights": module_digest(proxy), "data": data_fp,
               "cfg": conf, "role": role}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mean_loss(proxy: T2IProxy, data: EncodedSet, rows: torch.Tensor, batch_size: int, device: Any) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for enc in data.batches(batch_size * 4, order=rows, device=device):
            loss = proxy.per_sample_loss(enc)
            total += float(loss.sum())
            n += int(loss.shape[0])
    return total / max(n, 1)


def _trainable(proxy: T2IProxy) -> nn.Module:
    try:
        return proxy.trainable
    except NotImplementedError:
        return proxy


def warm_up_proxy(
    proxy: T2IProxy,
    data: EncodedSet,
    cfg: WarmupConfig,
    data_fingerprint: str,
    role: str = "val",
    cache_dir: Optional[str | Path] = None,
    progress: bool = False,
    resume: str = "auto",
) -> WarmupResult:
    """Train ``proxy`` (in place) on ``data`` per ``cfg``, or load the cached result of the same run.

    Args:
        proxy: the proxy at its initial weights (the fingerprint includes them).
        data: the split's encodes (:func:`~lightning_alchemist.rater.encodes.cached_encodes`).
        cfg: steps, optimiser, held-out share and early stopping.
        data_fingerprint: names ``data`` (the encodes' fingerprint).
        role: ``val`` (the proxy) or ``pool`` (the penalty reference); part of the cache name.
        cache_dir: where results go (default ``<cache root>/warmup``).
        resume: ``auto`` continues from the state a killed warm-up saved (``<result>.partial.pt``, every
            ``cfg.checkpoint_every`` steps; the result is the same as an uninterrupted run's); ``never`` starts over.
    """
    module = _trainable(proxy)
    device = next((p.device for p in proxy.parameters()), torch.device("cpu"))
    fp = _fingerprint(proxy, data_fingerprint, cfg, role)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "warmup"
    path = root / f"{role}-{fp}.pt"
    t0 = time.perf_counter()
    if cfg.steps <= 0:
        return WarmupResult(False, "", 0, 0, float("nan"), float("nan"), 0.0, [])
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=False)
            module.load_state_dict(blob["state_dict"])
            stats = dict(blob["stats"])
            stats.update(cached=True, path=str(path))  # ``seconds``: what the training took when it ran
            return WarmupResult(**stats)
        partial = path.with_suffix(".partial.pt")
        if resume == "never":
            partial.unlink(missing_ok=True)
        result = _train(proxy, module, data, cfg, device, progress, partial)
        result.path = str(path)
        result.seconds = time.perf_counter() - t0  # stored: a cached result reports what the training took
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"state_dict": module.state_dict(), "stats": result.as_dict(), "config": dataclasses.asdict(cfg)}, tmp)
        os.replace(tmp, path)
        partial.unlink(missing_ok=True)  # after the result: a kill in between resumes, then finds the result
    return result


def _save_partial(path: Path, state: dict[str, Any]) -> None:
    """Write the loop's state atomically (a kill mid-write leaves the previous state)."""
    from lightning.fabric.utilities.seed import _collect_rng_states

    tmp = path.with_suffix(".tmp")
    torch.save({**state, "rng": _collect_rng_states(include_cuda=torch.cuda.is_available())}, tmp)
    os.replace(tmp, path)


def _load_partial(path: Optional[Path], module: nn.Module, opt: Any, gen: torch.Generator) -> Optional[dict[str, Any]]:
    """The state a killed warm-up saved (weights, optimiser, data order, RNG, early-stopping record), restored in place."""
    if path is None or not path.is_file():
        return None
    from lightning.fabric.utilities.seed import _set_rng_states

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a state from another version or a damaged file: start over, say so
        log.warning("warm-up: cannot read the saved state %s (%s); starting from step 0", path, type(err).__name__)
        return None
    module.load_state_dict(state["module"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    _set_rng_states(state["rng"])
    log.info("warm-up: resuming from step %d (%s)", state["step"], path)
    print(f"proxy warm-up: resuming from step {state['step']} of {path.name} (resume=auto)", flush=True)
    return state


def _train(proxy: T2IProxy, module: nn.Module, data: EncodedSet, cfg: WarmupConfig, device: Any, progress: bool,
           partial: Optional[Path] = None) -> WarmupResult:
    train_rows, held_rows = held_out_split(len(data), cfg.holdout, cfg.seed)
    if len(train_rows) == 0:
        raise ValueError(f"warm-up: the split has {len(data)} samples; nothing to train on (lower rater.warmup.holdout)")
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    order = train_rows[torch.randperm(len(train_rows), generator=gen)]
    pos = 0
    best_state, best_loss, best_step = None, math.inf, 0
    history: list[tuple[int, float, float]] = []
    bad = 0
    running = 0.0
    steps_run = 0
    first = 1
    saved = _load_partial(partial, module, opt, gen)
    if saved is not None:
        order, pos, best_state, best_loss, best_step = saved["order"], saved["pos"], saved["best_state"], saved["best_loss"], saved["best_step"]
        history, bad, running, steps_run = [tuple(h) for h in saved["history"]], saved["bad"], saved["running"], saved["step"]
        first = steps_run + 1
    bar = None
    if progress:
        from lightning_alchemist.runtime import progress_bar

        bar = progress_bar(total=cfg.steps, desc="proxy warm-up", unit="step", leave=False, initial=first - 1)
    proxy.train()
    for step in range(first, cfg.steps + 1):
        if pos + cfg.batch_size > len(order):
            order, pos = train_rows[torch.randperm(len(train_rows), generator=gen)], 0
        rows = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        enc = data.take(rows, device)
        if cfg.caption_drop > 0:
            drop = torch.rand(len(rows), generator=gen) < cfg.caption_drop
            try:
                enc = proxy.drop_captions(enc, drop)
            except NotImplementedError:  # a proxy without an empty caption trains on every caption
                pass
        for g in opt.param_groups:
            g["lr"] = cfg.lr * warmup_lr_factor(step, cfg)
        loss = proxy.per_sample_loss(enc).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip)
        opt.step()
        value = float(loss.detach())
        running = 0.9 * running + 0.1 * value if step > 1 else value
        steps_run = step
        if bar is not None:
            bar.update(1)
        if len(held_rows) and (step % cfg.eval_every == 0 or step == cfg.steps):
            proxy.eval()
            held = _mean_loss(proxy, data, held_rows, cfg.batch_size, device)
            proxy.train()
            history.append((step, held, running))
            if held < best_loss - 1e-4:
                best_loss, best_step, bad = held, step, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                bad += 1
                if cfg.patience and bad >= cfg.patience:
                    break
        if partial is not None and cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            _save_partial(partial, {"step": step, "module": module.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                                    "order": order, "pos": pos, "best_state": best_state, "best_loss": best_loss,
                                    "best_step": best_step, "history": history, "bad": bad, "running": running})
    if bar is not None:
        bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        best_step = steps_run
    proxy.eval()
    return WarmupResult(False, "", steps_run, best_step, float(best_loss), running, 0.0, history)


def write_warmup_metrics(result: WarmupResult, folder: str | Path) -> Optional[Path]:
    """The warm-up's curve as a CSVLogger-style ``folder/version_0/metrics.csv`` (step, held-out and
    train loss), so reports plot it like a rater's training curves; None when there is no history."""
    if not result.history:
        return None
    path = Path(folder) / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step,warmup/holdout_loss,warmup/train_loss"]
    for step, held, *rest in result.history:  # entries cached by an earlier version lack the train loss
        lines.append(f"{int(step)},{held:.6f},{f'{rest[0]:.6f}' if rest else ''}")
    path.write_text("\n".join(lines) + "\n")
    return path
