"""Rater network, weighting, schedules, RaterModule steps and the meta-gradient variants (toy proxy, CPU)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import RaterInputs
from lightning_alchemist.rater.config import NetworkConfig, OptimConfig, rater_config
from lightning_alchemist.rater.heads import batch_weights, weight_entropy
from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.meta import MetaContext, Penalty, build_meta_gradient
from lightning_alchemist.rater.module import RaterModule, spearman
from lightning_alchemist.rater.network import RaterNetwork
from lightning_alchemist.rater.schedule import alpha_at, lr_factor

from rater_toys import LinearToyProxy, ToyProxy, collate, flipped_regression, loader, make_samples



# The amortised official rule (the module's tests; the default rating is the warmed-up proxy's contrast).
SMALL = {"network": {"depth": 1, "width": 32, "heads": 2, "head_hidden": 16}, "probe_size": 64, "objective": "official"}
FAST = {"rater_optim": {"lr": 3e-3, "warmup_epochs": 0}, "proxy_optim": {"lr": 1e-2, "warmup_epochs": 0}, "alpha_epoch0": 0.9}


def trainer(epochs: int, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )


def module(**cfg) -> RaterModule:
    torch.manual_seed(0)
    return RaterModule(ToyProxy(), 48, 16, {**SMALL, **cfg})


def inputs_of(proxy: ToyProxy, samples) -> RaterInputs:
    return proxy.rater_inputs(proxy.encode(collate(samples)))


def auc(good: torch.Tensor, bad: torch.Tensor) -> float:
    return float((good[:, None] > bad[None, :]).float().mean())


# --------------------------------------------------------------------------- weights and heads
@pytest.mark.parametrize("mode,legacy", [("temperature", False), ("none", False), ("temperature", True)])
def test_weights_sum_to_one_per_batch(mode, legacy):
    logits, group = torch.randn(13) * 3, torch.randn(())
    w, tau = batch_weights(logits, group, mode, legacy)
    assert torch.allclose(w.sum(), torch.tensor(1.0), atol=1e-6)
    assert (w > 0).all()
    if mode == "temperature" and not legacy:
        assert 0 < float(tau) < 2
        assert torch.allclose(w, torch.softmax(tau * logits, 0))


def test_product_mode_is_paper_literal_and_legacy_reproduces_official_double_softmax():
    logits, group = torch.randn(8), torch.tensor(0.3)
    w, gate = batch_weights(logits, group, "product")
    assert torch.allclose(w.sum(), torch.sigmoid(group), atol=1e-6)
    legacy, _ = batch_weights(logits, group, "temperature", legacy_alchemist=True)
    official = torch.softmax(torch.softmax(torch.sigmoid(logits), 0) * torch.sigmoid(group), 0)
    assert torch.allclose(legacy, official)
    # the official double softmax is nearly uniform (method.md §2.4)
    assert float(legacy.max() / legacy.min()) < 1.2


def test_weight_entropy_bounds():
    assert math.isclose(float(weight_entropy(torch.full((8,), 1 / 8))), 1.0, rel_tol=1e-6)
    assert float(weight_entropy(torch.tensor([1.0, 0, 0, 0]))) < 1e-6


def test_ratings_do_not_change_with_batch_neighbours():
    proxy = ToyProxy()
    net = RaterNetwork(48, 16, NetworkConfig(depth=2, width=32, heads=4)).eval()
    a, b = make_samples(12, 0.5, 1, "a"), make_samples(12, 0.5, 2, "b")
    with torch.no_grad():
        together = net(inputs_of(proxy, a)).logits
        alone = torch.cat([net(inputs_of(proxy, [s])).logits for s in a])
        mixed = net(inputs_of(proxy, a[:4] + b[:9])).logits[:4]
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together[:4], mixed, atol=1e-5)


def test_empty_caption_gives_finite_rating():
    proxy = ToyProxy()
    net = RaterNetwork(48, 16, NetworkConfig(depth=1, width=32, heads=2))
    s = make_samples(2, 0.0, 1, "e")
    s[0]["caption"] = ""
    assert torch.isfinite(net(inputs_of(proxy, s)).logits).all()


# --------------------------------------------------------------------------- config and schedules
def test_config_errors_are_one_line():
    for bad in ({"meta_gradient": "second"}, {"group_head": "max"}, {"network": {"width": 30, "heads": 4}}, {"nope": 1},
                {"steps_per_epoch": 0}, {"epochs": 0}):
        with pytest.raises(ConfigError) as err:
            rater_config(bad)
        assert "\n" not in str(err.value) and "rater" in str(err.value)


def test_alpha_schedule_function():
    cfg = rater_config({})
    assert [round(alpha_at(e, cfg), 6) for e in range(4)] == [1.0, 0.97, 0.94, 0.91]
    cfg = rater_config({"alpha_epoch0": 0.8, "alpha_min": 0.95})
    assert [round(alpha_at(e, cfg), 6) for e in range(4)] == [0.8, 0.97, 0.95, 0.95]


def test_lr_factor_warmup_flat_then_linear():
    oc = OptimConfig(warmup_epochs=1.0, warmup_start=0.005, flat_fraction=0.1, final_factor=0.01)
    assert lr_factor(0, 110, 10, oc) == pytest.approx(0.005)
    assert lr_factor(5, 110, 10, oc) == pytest.approx(0.005 + 0.995 * 0.5)
    assert lr_factor(15, 110, 10, oc) == 1.0  # inside the flat 10 % of the remaining 100 steps
    assert lr_factor(110, 110, 10, oc) == pytest.approx(0.01)
    assert lr_factor(60, 110, 10, oc) == pytest.approx(1 + (0.01 - 1) * 40 / 90)
    assert lr_factor(1000, math.inf, 10, oc) == 1.0


def test_paired_loader_epoch_is_one_val_pass_and_pool_cycles():
    pool = [{"i": i} for i in range(5)]
    val = [{"v": i} for i in range(7)]
    pl_ = PairedLoader(pool, val)
    assert len(pl_) == 7
    first = [b["pool"]["i"] for b in pl_]
    second = [b["pool"]["i"] for b in pl_]
    assert first == [0, 1, 2, 3, 4, 0, 1] and second == [2, 3, 4, 0, 1, 2, 3]
    assert [b["val"]["v"] for b in pl_] == list(range(7))


# --------------------------------------------------------------------------- the training step
def _touched(loss, parts):
    """The names of ``parts`` (name -> module) whose parameters get a non-zero gradient from ``loss``."""
    named = [(n, p) for n, m in parts.items() if m is not None for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n for (n, _), g in zip(named, grads) if g is not None and float(g.abs().sum()) > 0}


@pytest.mark.parametrize("variant", ["first_order", "penalty", "unrolled"])
def test_rater_loss_reaches_only_rater_and_proxy_loss_only_proxy(variant):
    torch.manual_seed(0)
    m = RaterModule(ToyProxy(), 48, 16, {**SMALL, "meta_gradient": variant, "alpha_epoch0": 0.5})
    pool, val = make_samples(16, 0.5, 1, "p"), make_samples(16, 0.0, 2, "v")
    # θ̂ starts as a copy of θ; move θ one step so the penalty's signal ℓ(θ) − ℓ(θ̂) is not exactly zero
    if variant == "penalty":
        with torch.no_grad():
            for p in m.proxy.head.parameters():
                p.add_(0.01 * torch.randn_like(p))
    out = m.step_losses({"pool": collate(pool), "val": collate(val)})
    parts = {"proxy": m.proxy, "rater": m.rater, "reference": getattr(m.meta, "reference", None)}
    assert _touched(out["rater"], parts) == {"rater"}
    assert _touched(out["proxy"], parts) == {"proxy"}
    if variant == "penalty":
        assert _touched(out["reference"], parts) == {"reference"}
    else:
        assert out["reference"] is None


def test_training_step_updates_every_model_with_its_own_optimizer():
    torch.manual_seed(0)
    m = RaterModule(ToyProxy(), 48, 16, {**SMALL, "meta_gradient": "penalty", "alpha_epoch0": 0.5})
    before = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    pool, val = make_samples(16, 0.5, 1, "p"), make_samples(16, 0.0, 2, "v")
    trainer(1, limit_train_batches=2).fit(m, PairedLoader(loader(pool, 8), loader(val, 8)))
    moved = {n.split(".")[0] if not n.startswith("meta.") else "reference" for n, p in m.named_parameters()
             if n in before and not torch.equal(before[n], p.detach())}
    assert moved == {"proxy", "rater", "reference"}
    frozen = ToyProxy()  # the frozen word embedding never moves
    assert torch.equal(m.proxy.word_emb.weight, frozen.word_emb.weight)


def test_alpha_follows_schedule_across_epochs_and_metrics_are_logged():
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append(round(pl_module.alpha, 6))

    m = module(alpha_decay=0.1, alpha_epoch0=0.95, alpha_min=0.75)
    t = trainer(4, callbacks=[Spy()])
    t.fit(m, PairedLoader(loader(make_samples(32, 0.5, 1, "p"), 8, True), loader(make_samples(16, 0, 2, "v"), 8)))
    assert seen == [0.95, 0.9, 0.8, 0.75]
    for name in ("proxy_loss", "rater_loss", "val_loss", "alpha", "tau", "weight_entropy", "probe_rank_corr"):
        assert f"train/{name}" in t.callback_metrics or f"train/{name}_epoch" in t.callback_metrics, name
    assert -1.0 <= float(t.callback_metrics["train/probe_rank_corr"]) <= 1.0


def test_spearman():
    a = torch.tensor([1.0, 2, 3, 4])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- meta-gradient direction vs finite differences
def _loss(proxy, params, enc):
    from torch.func import functional_call

    from lightning_alchemist.rater.meta import _LossCall

    return functional_call(_LossCall(proxy), {f"proxy.{n}": p for n, p in params.items()}, (enc,))


def _fd_direction(proxy, pool, val, phi, eta, eps=1e-4):
    """−d L_val(θ − η ∇θ Σ softmax(φ)_i ℓ_i(θ)) / dφ_i by central differences."""
    params = {n: p.detach() for n, p in proxy.named_parameters() if p.requires_grad}

    def val_after(ph):
        leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        grads = torch.autograd.grad((torch.softmax(ph, 0) * _loss(proxy, leaves, pool)).sum(), list(leaves.values()))
        stepped = {n: p - eta * g for (n, p), g in zip(leaves.items(), grads)}
        return float(_loss(proxy, stepped, val).mean().detach())

    out = torch.zeros_like(phi)
    for i in range(len(phi)):
        e = torch.zeros_like(phi)
        e[i] = eps
        out[i] = -(val_after(phi + e) - val_after(phi - e)) / (2 * eps)
    return out


@pytest.mark.parametrize("variant", ["first_order", "penalty", "unrolled"])
def test_meta_gradient_direction_agrees_with_finite_differences(variant):
    """Toy with a known answer: half the pool has consistently wrong targets (flipped), the
    proxy is half-way trained toward the clean validation solution. The true one-step effect of
    raising a sample's logit (finite differences of L_val after an inner step) is positive for
    clean samples on average and negative for flipped ones; each variant's rater update must agree."""
    pool, val, bad, theta_star = flipped_regression()
    proxy = LinearToyProxy(len(theta_star))
    with torch.no_grad():
        proxy.theta.copy_(0.5 * theta_star)
    eta = 0.01
    cfg = rater_config({"meta_gradient": variant, "unrolled_inner_lr": eta, "unrolled_steps": 1})
    meta = build_meta_gradient(cfg, proxy)
    if isinstance(meta, Penalty):  # θ̂: the least-squares fit of the (uniformly weighted) pool alone
        with torch.no_grad():
            meta.reference.theta.copy_(torch.linalg.lstsq(pool["x"], pool["y"].unsqueeze(1)).solution.squeeze(1))
    phi = torch.zeros(len(bad), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        pool_loss = proxy.per_sample_loss(pool)
    ctx = MetaContext(proxy=proxy, pool=pool, val=val, pool_loss=pool_loss)
    (grad,) = torch.autograd.grad(meta.rater_loss(torch.softmax(phi, 0), ctx), phi)
    direction = -grad
    fd = _fd_direction(proxy, pool, val, phi.detach(), eta)
    assert float(fd[~bad].mean()) > 0 > float(fd[bad].mean())  # the known answer
    assert float(direction[~bad].mean()) > 0 > float(direction[bad].mean())
    if variant == "unrolled":  # the exact hypergradient equals the finite difference
        assert torch.allclose(direction, fd, rtol=1e-4, atol=1e-9)
    else:  # first-order approximations: the same direction overall (measured: 0.71 / 0.53)
        cosine = float(torch.nn.functional.cosine_similarity(direction, fd, dim=0))
        assert cosine > 0.4, cosine
    assert proxy.theta.grad is None  # no gradient reached the proxy


@pytest.mark.parametrize("variant", ["first_order", "penalty", "unrolled"])
def test_trained_rater_rates_random_captions_lower(variant):
    # The meta-gradient alone (no weight-entropy term, whose default of 1.0 is tuned for star_tiny on shapes).
    m = module(meta_gradient=variant, entropy_weight=0.0, **FAST)
    pool, val = make_samples(256, 0.5, 1, "p"), make_samples(128, 0.0, 2, "v")
    trainer(6).fit(m, PairedLoader(loader(pool, 32, True), loader(val, 32, True)))
    m.eval()
    test = make_samples(128, 0.5, 9, "t")
    bad = torch.tensor([s["meta"]["mismatch"] for s in test])
    with torch.no_grad():
        r = m.rate(inputs_of(m.proxy, test))
    assert auc(r[~bad], r[bad]) > 0.75


def test_unrolled_param_subset_and_bad_pattern():
    m = module(meta_gradient="unrolled", unrolled_params=["head.2.*"])
    assert set(m.meta.selected(m.proxy)) == {"head.2.weight", "head.2.bias"}
    bad = module(meta_gradient="unrolled", unrolled_params=["blocks.99.*"])
    with pytest.raises(ConfigError, match="unrolled_params"):
        bad.meta.selected(bad.proxy)


def test_checkpoint_roundtrip_rebuilds_proxy_and_gives_same_ratings(tmp_path):
    from lightning_alchemist.rater.scoring import load_rater

    torch.manual_seed(0)
    m = RaterModule(ToyProxy(), 48, 16, SMALL, proxy_spec={"model": {"class": "rater_toys.ToyProxy", "kwargs": {}}})
    t = trainer(1, limit_train_batches=2)
    t.fit(m, PairedLoader(loader(make_samples(32, 0.5, 1, "p"), 8), loader(make_samples(16, 0, 2, "v"), 8)))
    t.save_checkpoint(tmp_path / "rater.ckpt")
    loaded = load_rater(tmp_path / "rater.ckpt").eval()
    m.eval()
    s = make_samples(10, 0.5, 4, "c")
    with torch.no_grad():
        assert torch.allclose(m.rate(inputs_of(m.proxy, s)), loaded.rate(inputs_of(loaded.proxy, s)))
    assert loaded.cfg == m.cfg
