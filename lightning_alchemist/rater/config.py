"""Schema of the ``rater`` config group (``conf/rater/*.yaml``), validated into dataclasses.

The rater's config is independent of the *target* model: it names the *proxy* it trains with
(``proxy``, a ``conf/model`` entry) and nothing else model-specific, so a rater trained with one
proxy can score data for any target (the rating artifact depends only on data + rater).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from lightning_alchemist.config import Choice, to_dataclass
from lightning_alchemist.errors import ConfigError
from lightning_alchemist.rater.warmup import WARMUP_CONTINUATIONS, WarmupConfig

__all__ = [
    "GROUP_HEADS",
    "META_GRADIENTS",
    "OBJECTIVES",
    "Objective",
    "SCORE_WITH",
    "ScoreWith",
    "WARMUP_CONTINUATIONS",
    "NetworkConfig",
    "OptimConfig",
    "RaterConfig",
    "ScoreConfig",
    "rater_config",
]

class GroupHead(Choice):
    temperature = "temperature"
    product = "product"
    none = "none"


class MetaGradientKind(Choice):
    first_order = "first_order"
    penalty = "penalty"
    unrolled = "unrolled"


GROUP_HEADS = GroupHead.values()
META_GRADIENTS = MetaGradientKind.values()


class Objective(Choice):
    """What the rating ranks by (:mod:`lightning_alchemist.rater.signals`)."""

    official = "official"
    regression = "regression"
    contrast = "contrast"
    penalty = "penalty"


class ScoreWith(Choice):
    """Who writes the ratings: the trained rater network, or the frozen warmed-up proxy directly."""

    rater = "rater"
    proxy = "proxy"


OBJECTIVES = Objective.values()
SCORE_WITH = ScoreWith.values()
# The direct scorer's model-free image checks (lightning_alchemist.rater.detail.CHECKS): each has
# ``<name>_weight`` and ``<name>_threshold`` below.
IMAGE_CHECKS = ("detail", "noise", "empty")


@dataclass
class NetworkConfig:
    """The rater transformer (official: depth 8, width 512, 8 heads; ours is small by default)."""

    depth: int = 2
    width: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    head_hidden: int = 64
    # Learned per-scale embedding for scale-wise proxies (STAR); tokens' ``levels`` index it.
    max_levels: int = 32
    dropout: float = 0.0


@dataclass
class OptimConfig:
    """One AdamW optimiser and its schedule (official defaults for both proxy and rater)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05  # on >=2-D weights only, as the official code
    clip: float = 2.0  # global grad-norm clip; 0 disables
    warmup_epochs: float = 0.2  # linear warm-up from warmup_start x lr
    warmup_start: float = 0.005
    flat_fraction: float = 0.05  # after warm-up: flat for this share of the rest ("lin0") ...
    final_factor: float = 0.01  # ... then linear decay to final_factor x lr


@dataclass
class ScoreConfig:
    """Scoring: how ratings are computed and written."""

    # Also store ``rating_batch``, the batch-relative weight of each sample in its scoring batch
    # (depends on batch neighbours: for inspection/parity only, never a rating).
    store_batch_rating: bool = False
    # Also store each sample's pooled rater features as an ``embedding`` list column (opt-in; read by
    # curation.embeddings.source=ratings for near-duplicate removal and concept clusters).
    store_embedding: bool = False


@dataclass
class RaterConfig:
    """Rater training: network, weighting, meta-gradient variant, schedules (schema of ``rater``)."""

    # The proxy's ``model`` node (a conf/model entry, composed by Hydra: ``rater.proxy=star_tiny``);
    # None = the caller's model (from Python, RaterModule takes a built proxy).
    proxy: Any = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    # temperature (default): w = softmax_B(tau_B * phi), tau_B = 2 sigmoid(group(mean, var));
    # product: paper-literal softmax_B(phi) * sigmoid(group) (does not sum to 1); none: softmax_B(phi).
    group_head: GroupHead = GroupHead.temperature
    # Reproduce the official softmax(softmax(sigmoid(phi)) * sigmoid(g)) weights (checkpoint/number parity).
    legacy_alchemist_weights: bool = False
    # Official pool term (1/B) sum_i w_i l_i instead of sum_i w_i l_i.
    legacy_mean_over_batch: bool = False
    # What the rating ranks by (a choice: OBJECTIVES): ``official`` (Σ w_i·sg(ℓ_i) through the batch
    # softmax; uses meta_gradient), ``regression`` (−ℓ), ``contrast`` (−[ℓ − β(ℓ̄(c′) − ℓ)], captions
    # rolled in the batch and the empty one), ``penalty`` (ℓ(θ̂) − ℓ, θ̂ a cached pool-trained
    # reference). See lightning_alchemist.rater.signals. Default: contrast, scored directly by the
    # warmed-up proxy: measured on shapes and glyphs (benchmarks/results/rater_signal.md), it keeps the
    # least mismatched captions of all variants and as little noise/plain as the penalty gap, without the
    # penalty's pool warm-up; amortised raters never learned the caption signal (mismatch AUC ~0.5).
    objective: Objective = Objective.contrast
    # contrast: weight β of the caption gain (2/8 trade plain for noise), the rolled captions it averages
    # over, and the empty caption's share of the partners' loss (it exposes generic captions; 0 = not a
    # partner; a checkpoint's former ``true`` reads as 0.5). Each partner is one more proxy forward per sample.
    # 3 rolled + the empty caption at ¼ (was 2 + ½), with the image checks on, top-K at keep 0.5, 3 seeds: glyphs
    # mismatch kept 26 -> 23 %, shapes unchanged (defect share 0.151), for one more forward per sample; 4 rolled
    # gain nothing more, no empty caption costs shapes' degraded 15 -> 18 % (benchmarks/results/rater_detail_partners.md).
    contrast_beta: float = 4.0
    contrast_partners: int = 3
    contrast_null: float = 0.25
    # Direct scoring: subtract ``detail_weight · max(0, −z − detail_threshold)`` from the rating, z the robust z of
    # the image's log native-resolution detail share against the validation split (lightning_alchemist.rater.detail):
    # blurred and upscaled images, which no proxy loss at 32 px tells from clean ones (AUC 0.49–0.58 on both
    # datasets), drop below the clean data. 0 = off. Measured (benchmarks/results/rater_detail.md, 3 seeds):
    # AUC clean-above-degraded 0.58 -> 0.87 (shapes) and 0.49 -> 0.98 (glyphs); weight in the contrast's nats.
    detail_weight: float = 4.0
    detail_threshold: float = 2.0
    # The same for two more model-free checks against the validation split (lightning_alchemist.rater.detail):
    # ``noise``: Donoho's noise estimate far ABOVE the reference (heavy pixel noise, which the proxy rated above
    # clean text renders; glyphs noise kept 17 % -> 0 %, shapes chaotic 2 % -> 0 %); ``empty``: the grey-level
    # contrast far BELOW it (near-empty frames; shapes plain kept 19 % -> 0 %). benchmarks/results/rater_detail_checks.md.
    noise_weight: float = 4.0
    noise_threshold: float = 3.0
    empty_weight: float = 4.0
    empty_threshold: float = 3.0
    # ``rater``: the trained rater network scores (amortised); ``proxy``: the frozen warmed-up proxy
    # scores every sample with the objective's signal (no rater training; pools small enough).
    score_with: ScoreWith = ScoreWith.proxy
    # Proxy warm-up on the validation split before rating (paper Eq. 4), cached; the penalty
    # objective also warms a reference on the pool with it. steps 0 = none (official code).
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    meta_gradient: MetaGradientKind = MetaGradientKind.first_order
    # unrolled: functional inner SGD steps, their lr, and which proxy parameters they move (fnmatch
    # patterns over named_parameters; [] = all trainable, affordable only for tiny proxies).
    unrolled_steps: int = 1
    unrolled_inner_lr: float = 1e-2
    unrolled_params: list[str] = field(default_factory=list)
    # Upper-level weight alpha_e = max(alpha_min, alpha0 - alpha_decay * e); alpha_epoch0 overrides
    # epoch 0 (e.g. 0.9) so the proxy sees the pool from the start.
    alpha0: float = 1.0
    alpha_decay: float = 0.03
    alpha_min: float = 0.0
    alpha_epoch0: Optional[float] = None
    # Weight of the (negative, normalised) weight-entropy regulariser on the rater loss; 0 = off.
    # 1.0 keeps the batch softmax from collapsing on the easiest samples (official: 0).
    entropy_weight: float = 1.0
    # Freeze the proxy (official fixVar): rater-only training against a fixed proxy.
    freeze_proxy: bool = False
    # Tuned for the tiny CPU proxy (star_tiny) on shapes (benchmarks/rater_auc.py; rater=official has
    # the official lr 1e-4 for both): the proxy learns at 2e-3 (3e-3 diverges in quality); the rater's
    # lr ramps up over 4 of the 10 epochs, so it learns mostly from a proxy that has already learned the
    # validation data (a random proxy's losses carry no signal to rank by).
    proxy_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3))
    rater_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_epochs=4.0))
    # Samples of the fixed probe set (first pool batches) whose ratings are rank-correlated
    # between epochs and logged as ``probe_rank_corr`` (a convergence signal); 0 = off.
    probe_size: int = 256
    epochs: int = 10
    # Rater-training steps per epoch; null = one full pass over the validation loader (official, 62 on
    # shapes). A shorter epoch keeps the per-epoch alpha and lr schedules but cuts the cost on small
    # machines: 10 x 20 = 200 steps (~100 s on 2 quiet CPU cores) fits the main job's budget. Measured
    # on shapes (benchmarks/rater_auc.py), AUC(clean > chaotic): 20 -> 0.82, 40 -> 0.88.
    steps_per_epoch: Optional[int] = 20
    # A resumable ``last.ckpt`` (plus the latest ``keep_checkpoints``) every this many Lightning steps (optimiser
    # steps: 2 per batch while the proxy trains with the rater); null: at every epoch's end (20 batches by
    # default, well under a minute here). A rerun continues from it (``resume=auto``).
    checkpoint_every_n_steps: Optional[int] = None
    keep_checkpoints: int = 2
    seed: int = 0
    score: ScoreConfig = field(default_factory=ScoreConfig)


def validate_rater_config(cfg: RaterConfig) -> RaterConfig:
    """Cross-field checks the dataclass types cannot express."""
    if cfg.group_head not in GROUP_HEADS:
        raise ConfigError(f"config 'rater.group_head': got '{cfg.group_head}', expected one of {', '.join(GROUP_HEADS)}")
    if cfg.meta_gradient not in META_GRADIENTS:
        raise ConfigError(
            f"config 'rater.meta_gradient': got '{cfg.meta_gradient}', expected one of {', '.join(META_GRADIENTS)}"
        )
    for name, allowed in (("objective", OBJECTIVES), ("score_with", SCORE_WITH)):
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"config 'rater.{name}': got '{getattr(cfg, name)}', expected one of {', '.join(allowed)}")
    if cfg.warmup.continuation not in WARMUP_CONTINUATIONS:
        raise ConfigError(
            f"config 'rater.warmup.continuation': got '{cfg.warmup.continuation}', expected one of {', '.join(WARMUP_CONTINUATIONS)}"
        )
    for check in IMAGE_CHECKS:
        weight, threshold = getattr(cfg, f"{check}_weight"), getattr(cfg, f"{check}_threshold")
        if weight < 0 or threshold < 0:
            raise ConfigError(f"config 'rater.{check}_weight' ({weight}) and 'rater.{check}_threshold' ({threshold}) "
                              f"must be >= 0; {check}_weight=0 turns the check off")
    if cfg.contrast_partners < 1 or cfg.contrast_beta < 0:
        raise ConfigError("config 'rater.contrast_partners' must be >= 1 and 'rater.contrast_beta' >= 0")
    if not 0.0 <= cfg.contrast_null <= 1.0:
        raise ConfigError(f"config 'rater.contrast_null': got {cfg.contrast_null}, expected the empty caption's share in [0, 1] "
                          "(0: not a partner)")
    if not 0.0 <= cfg.warmup.holdout < 1.0 or cfg.warmup.steps < 0:
        raise ConfigError("config 'rater.warmup': holdout must be in [0, 1) and steps >= 0")
    if cfg.score_with == "proxy" and cfg.warmup.steps == 0:
        raise ConfigError("config 'rater.score_with=proxy' scores with the warmed-up proxy: set rater.warmup.steps > 0 "
                          f"(the default is {WarmupConfig.steps})")
    if cfg.network.width % cfg.network.heads:
        raise ConfigError(
            f"config 'rater.network.width' ({cfg.network.width}) must be divisible by 'rater.network.heads' ({cfg.network.heads})"
        )
    if cfg.network.depth < 0 or cfg.network.width <= 0:
        raise ConfigError("config 'rater.network.depth' must be >= 0 and 'rater.network.width' > 0")
    for name in ("alpha0", "alpha_min"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"config 'rater.{name}': got {getattr(cfg, name)}, expected a value in [0, 1]")
    if cfg.alpha_epoch0 is not None and not 0.0 <= cfg.alpha_epoch0 <= 1.0:
        raise ConfigError(f"config 'rater.alpha_epoch0': got {cfg.alpha_epoch0}, expected null or a value in [0, 1]")
    if cfg.epochs < 1:
        raise ConfigError(f"config 'rater.epochs': got {cfg.epochs}, expected >= 1")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch < 1:
        raise ConfigError(f"config 'rater.steps_per_epoch': got {cfg.steps_per_epoch}, expected null or >= 1")
    if cfg.checkpoint_every_n_steps is not None and cfg.checkpoint_every_n_steps < 1:
        raise ConfigError(f"config 'rater.checkpoint_every_n_steps': got {cfg.checkpoint_every_n_steps}, expected null or >= 1")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"config 'rater.keep_checkpoints': got {cfg.keep_checkpoints}, expected >= 1")
    if cfg.unrolled_steps not in (1, 2, 3):
        raise ConfigError(f"config 'rater.unrolled_steps': got {cfg.unrolled_steps}, expected 1, 2 or 3")
    if cfg.legacy_alchemist_weights and cfg.group_head == "product":
        raise ConfigError("config 'rater.legacy_alchemist_weights' already includes the group product; set rater.group_head=temperature")
    return cfg


# Keys that set how often training state is saved, not what is trained: left out of the rater's fingerprint.
BOOKKEEPING_KEYS = ("checkpoint_every_n_steps", "keep_checkpoints")


def rater_identity(node: Any) -> Any:
    """The rater config as a plain container without its checkpoint cadence (what names its trained result)."""
    from lightning_alchemist.config import as_container

    out = as_container(node)
    if isinstance(out, dict):
        out = {k: v for k, v in out.items() if k not in BOOKKEEPING_KEYS}
        if isinstance(out.get("warmup"), dict):
            out["warmup"] = {k: v for k, v in out["warmup"].items() if k != "checkpoint_every"}
    return out


def rater_config(node: Any) -> RaterConfig:
    """Validate the ``rater`` group (a DictConfig, dict, RaterConfig or None for defaults)."""
    if isinstance(node, (dict, DictConfig)) and isinstance(node.get("contrast_null"), bool):
        # a checkpoint or config from when the empty caption was a switch at half the weight
        share = 0.5 if node.get("contrast_null") else 0.0
        node = {**node, "contrast_null": share} if isinstance(node, dict) else OmegaConf.merge(node, {"contrast_null": share})
    return validate_rater_config(to_dataclass(node, RaterConfig, "rater"))
