"""Rater objectives (signals, regression loss), proxy warm-up cache, direct scoring, ranking ends -> selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import Tensor, nn

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.proxy.base import Encoded, RaterInputs, T2IProxy
from lightning_alchemist.rater import warmup as warmup_mod
from lightning_alchemist.rater.config import rater_config
from lightning_alchemist.rater.direct import ProxyScorer
from lightning_alchemist.rater.encodes import EncodedSet, cached_encodes, encode_dataset
from lightning_alchemist.rater.module import RaterModule
from lightning_alchemist.rater.scoring import score
from lightning_alchemist.rater.signals import (
    RANKING_KEY,
    RankingEnds,
    caption_gain,
    ends_of,
    partner_shifts,
    proxy_signal,
    regression_loss,
    rolled_captions,
    standardise,
)
from lightning_alchemist.rater.warmup import WarmupConfig, held_out_split, warm_up_proxy
from lightning_alchemist.selection.ratings import Ratings
from lightning_alchemist.selection.strategies import ShiftGaussian, build_strategy

from rater_toys import ToyProxy, ToyScoreData, collate, make_samples

SMALL = {"network": {"depth": 1, "width": 32, "heads": 2, "head_hidden": 16}, "probe_size": 0}


class ScalarProxy(T2IProxy):
    """ℓ_i = (x_i − a·c_i)²: image value x, caption value c (``pooled``), one trainable weight a."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def encode(self, batch):  # pragma: no cover - tests build encodes directly
        raise NotImplementedError

    def per_sample_loss(self, encoded: Encoded, generator=None) -> Tensor:
        return (encoded["x"] - self.a * encoded["pooled"][:, 0]) ** 2

    def null_text(self, batch_size: int) -> dict:
        # the empty caption has value 0: ℓ(∅) = x²
        return {"pooled": torch.zeros(batch_size, 1), "text": torch.zeros(batch_size, 1, 1),
                "text_mask": torch.ones(batch_size, 1, dtype=torch.bool)}

    def rater_inputs(self, encoded: Encoded) -> RaterInputs:
        b = encoded["x"].shape[0]
        return RaterInputs(encoded["x"].view(b, 1, 1), encoded["text"], encoded["text_mask"], encoded["pooled"])


def scalar_batch(x: list[float], c: list[float]) -> Encoded:
    xs, cs = torch.tensor(x), torch.tensor(c)
    b = len(x)
    return {"key": [f"k{i}" for i in range(b)], "x": xs, "pooled": cs.view(b, 1), "text": cs.view(b, 1, 1),
            "text_mask": torch.ones(b, 1, dtype=torch.bool)}


# --------------------------------------------------------------------------- losses against hand references
def test_regression_loss_hand_reference():
    logits = torch.tensor([0.5, -1.0, 2.0])
    signal = torch.tensor([-1.0, -2.0, -3.0])  # −ℓ for ℓ = 1, 2, 3
    z = 1.0 / math.sqrt(2.0 / 3.0)  # standardised: [z, 0, −z]
    expected = ((0.5 - z) ** 2 + 1.0 + (2.0 + z) ** 2) / 3
    assert math.isclose(float(regression_loss(logits, signal)), expected, rel_tol=1e-5)
    assert torch.equal(standardise(torch.tensor([4.0])), torch.zeros(1))
    assert torch.equal(standardise(torch.full((3,), 2.0)), torch.zeros(3))


def test_partner_shifts_are_distinct_and_never_zero():
    assert partner_shifts(3, 4) == [1, 2]
    assert partner_shifts(32, 4) == [1, 8, 16, 24]
    assert partner_shifts(1, 4) == []
    enc = scalar_batch([1, 2, 3], [10, 20, 30])
    assert rolled_captions(enc, 1)["pooled"][:, 0].tolist() == [30, 10, 20]
    assert rolled_captions(enc, 1)["x"].tolist() == [1, 2, 3]  # images stay


def test_contrast_signal_hand_reference():
    proxy = ScalarProxy(1.0)
    x, c = [1.0, 2.0, 4.0], [1.0, 2.0, 0.0]  # sample 2's caption does not match its image
    enc = scalar_batch(x, c)
    loss = [(xi - ci) ** 2 for xi, ci in zip(x, c)]  # [0, 0, 16]
    # shifts 1 and 2: sample i sees captions c[i-1] and c[i-2]
    foreign = [((x[i] - c[(i - 1) % 3]) ** 2 + (x[i] - c[(i - 2) % 3]) ** 2) / 2 for i in range(3)]
    gain = [f - l for f, l in zip(foreign, loss)]
    beta = 2.0
    expected = [-(l - beta * g) for l, g in zip(loss, gain)]
    got = proxy_signal("contrast", proxy, enc, beta=beta, partners=4, null=False)
    assert torch.allclose(got, torch.tensor(expected))
    assert torch.allclose(caption_gain(proxy, enc, torch.tensor(loss), 4), torch.tensor(gain))
    # the mismatched sample ranks last; −ℓ alone agrees here, the contrast widens the gap
    assert int(got.argmin()) == 2
    # with the empty caption as a partner: half the rolled mean, half ℓ(∅) = x²
    gain_null = [(f + xi**2) / 2 - l for f, xi, l in zip(foreign, x, loss)]
    got_null = proxy_signal("contrast", proxy, enc, beta=beta, partners=4, null=0.5)
    assert torch.allclose(got_null, torch.tensor([-(l - beta * g) for l, g in zip(loss, gain_null)]))
    # the former switch (True) meant half the weight
    assert torch.allclose(proxy_signal("contrast", proxy, enc, beta=beta, partners=4, null=True), got_null)
    # a quarter: ℓ̄ = ¾ rolled mean + ¼ ℓ(∅)
    gain_q = [0.75 * f + 0.25 * xi**2 - l for f, xi, l in zip(foreign, x, loss)]
    got_q = proxy_signal("contrast", proxy, enc, beta=beta, partners=4, null=0.25)
    assert torch.allclose(got_q, torch.tensor([-(l - beta * g) for l, g in zip(loss, gain_q)]))
    with pytest.raises(ValueError, match="null"):
        caption_gain(proxy, enc, torch.tensor(loss), 4, null=1.5)


def test_loss_and_penalty_signals_hand_reference():
    proxy, reference = ScalarProxy(1.0), ScalarProxy(0.0)
    enc = scalar_batch([1.0, 3.0], [1.0, 1.0])
    assert torch.allclose(proxy_signal("regression", proxy, enc), torch.tensor([0.0, -4.0]))
    assert torch.allclose(proxy_signal("official", proxy, enc), torch.tensor([0.0, -4.0]))
    # penalty: ℓ(θ̂) − ℓ(θ) = [1 − 0, 9 − 4]
    assert torch.allclose(proxy_signal("penalty", proxy, enc, reference=reference), torch.tensor([1.0, 5.0]))
    with pytest.raises(ValueError, match="reference"):
        proxy_signal("penalty", proxy, enc)


@pytest.mark.parametrize("objective", ["regression", "contrast", "penalty"])
def test_objective_gradient_reaches_rater_only(objective):
    torch.manual_seed(0)
    reference = ToyProxy(seed=1) if objective == "penalty" else None
    m = RaterModule(ToyProxy(), 48, 16, {**SMALL, "objective": objective}, reference=reference)
    batch = {"pool": collate(make_samples(8, 0.5, 1, "p")), "val": collate(make_samples(8, 0, 2, "v"))}
    out = m.step_losses(batch)
    out["rater"].backward()
    assert all(p.grad is None for p in m.proxy.parameters())
    grads = [p.grad for p in m.rater.instance_head.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert m.ends == ends_of(objective)
    # the loss is the regression of the logits onto the standardised signal, recomputed by hand
    signal = proxy_signal(objective, m.proxy, m.proxy.encode(batch["pool"]), reference=reference,
                          partners=m.cfg.contrast_partners, null=m.cfg.contrast_null)
    assert torch.allclose(out["rater"], regression_loss(out["logits"], signal), atol=1e-5)


def test_penalty_objective_needs_reference_and_config_is_checked():
    with pytest.raises(ConfigError, match="reference"):
        RaterModule(ToyProxy(), 48, 16, {**SMALL, "objective": "penalty"}).on_fit_start()
    with pytest.raises(ConfigError, match="rater.objective"):
        rater_config({"objective": "likelihood"})
    with pytest.raises(ConfigError, match="warmup.steps"):
        rater_config({"score_with": "proxy", "warmup": {"steps": 0}})
    with pytest.raises(ConfigError, match="rater.contrast_null"):
        rater_config({"contrast_null": 1.5})


def test_contrast_null_switch_of_old_checkpoints_reads_as_a_share():
    from omegaconf import OmegaConf

    # a rater.ckpt written when the empty caption was a switch (True: half the weight) still loads as before
    assert rater_config({"contrast_null": True}).contrast_null == 0.5
    assert rater_config({"contrast_null": False}).contrast_null == 0.0
    assert rater_config(OmegaConf.create({"contrast_null": True})).contrast_null == 0.5


# --------------------------------------------------------------------------- encodes and warm-up
def toy_set(n: int = 48, mismatch: float = 0.0, seed: int = 2, prefix: str = "v") -> EncodedSet:
    return _encode(n, mismatch, seed, prefix)


def _encode(n: int, mismatch: float, seed: int, prefix: str) -> EncodedSet:
    return encode_dataset(ToyProxy(), make_samples(n, mismatch, seed, prefix), batch_size=16, collate_fn=collate)


def test_encoded_set_take_marks_batches_and_cache_is_reused(tmp_path):
    samples = make_samples(20, 0.0, 3, "e")

    class ListData(list):
        keys = [s["key"] for s in samples]

    data = ListData(samples)

    def proxy(seed: int = 0) -> ToyProxy:  # its frozen word embedding (seeded) names the encodes
        torch.manual_seed(0)
        return ToyProxy(seed=seed)

    enc, info = cached_encodes(proxy(), data, identity={"toy": 1}, cache_dir=tmp_path, collate_fn=collate)
    assert not info["cached"] and len(enc) == 20 and enc.keys == ListData.keys
    again, info2 = cached_encodes(proxy(), data, identity={"toy": 1}, cache_dir=tmp_path, collate_fn=collate)
    assert info2["cached"] and info2["fingerprint"] == info["fingerprint"]
    assert torch.equal(again.tensors["tokens"], enc.tensors["tokens"])
    batch = enc.take([3, 1])
    assert batch["encoded"] and batch["key"] == [ListData.keys[3], ListData.keys[1]]
    # other encoder weights -> another cache entry
    _, info3 = cached_encodes(proxy(5), data, identity={"toy": 1}, cache_dir=tmp_path, collate_fn=collate)
    assert info3["fingerprint"] != info["fingerprint"]


def test_held_out_split_is_seeded_and_disjoint():
    tr, ho = held_out_split(10, 0.2, 0)
    assert len(ho) == 2 and len(tr) == 8 and not set(tr.tolist()) & set(ho.tolist())
    assert torch.equal(held_out_split(10, 0.2, 0)[1], ho)


def test_warmup_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    val = toy_set()
    cfg = WarmupConfig(steps=30, lr=1e-2, batch_size=8, eval_every=10, patience=0)
    torch.manual_seed(0)
    proxy = ToyProxy()
    before = _mean(proxy, val)
    res = warm_up_proxy(proxy, val, cfg, "toyval", cache_dir=tmp_path)
    assert not res.cached and res.steps_run == 30 and res.best_step in (10, 20, 30)
    assert _mean(proxy, val) < before  # it learned the validation data
    trained = {k: v.clone() for k, v in proxy.state_dict().items()}

    def boom(*a, **k):
        raise AssertionError("the second warm-up must not train")

    monkeypatch.setattr(warmup_mod, "_train", boom)
    torch.manual_seed(0)
    again = ToyProxy()
    res2 = warm_up_proxy(again, val, cfg, "toyval", cache_dir=tmp_path)
    assert res2.cached and res2.best_step == res.best_step
    assert res2.seconds == res.seconds > 0  # the cost of the training run, also when loaded
    for k, v in again.state_dict().items():
        assert torch.equal(v, trained[k])


def test_warmup_early_stopping_keeps_best_held_out_weights(tmp_path):
    val = toy_set(32)
    # a huge lr diverges: held-out loss rises after the first evaluation, patience 1 stops there
    cfg = WarmupConfig(steps=200, lr=5.0, batch_size=8, eval_every=5, patience=1, clip=0.0, ramp_steps=1)
    res = warm_up_proxy(ToyProxy(), val, cfg, "diverge", cache_dir=tmp_path)
    assert res.steps_run < 200
    assert res.best_holdout_loss == min(held for _, held, _ in res.history)


def _mean(proxy: T2IProxy, data: EncodedSet) -> float:
    with torch.no_grad():
        return float(proxy.per_sample_loss(data.take(range(len(data)))).mean())


# --------------------------------------------------------------------------- direct scoring and ranking ends
@pytest.mark.parametrize("objective", ["regression", "contrast"])
def test_direct_scoring_writes_one_rating_per_key_with_declared_ends(tmp_path, objective):
    proxy = ToyProxy()
    scorer = ProxyScorer(proxy, {"objective": objective, "contrast_partners": 2})
    dm = ToyScoreData(num_shards=3, per_shard=10, batch_size=8)
    info = score(scorer, dm, tmp_path / "ratings", trainer_kwargs={"enable_progress_bar": False})
    keys = sorted(s["key"] for samples in dm.shards.values() for s in samples)
    r = Ratings.read(tmp_path / "ratings")
    assert sorted(r.keys.to_pylist()) == keys and info["rows"] == len(keys)
    assert r.ranking == {"objective": objective, "head": ends_of(objective).head, "tail": "noise"}
    meta = pq.read_schema(next((tmp_path / "ratings").glob("*.parquet"))).metadata
    assert RankingEnds.from_json(meta[RANKING_KEY]) == ends_of(objective)
    # the ratings are the proxy's signal, batch by batch in file order
    first = collate(dm.shards["shard-0000"][:8])
    expected = proxy_signal(objective, proxy, proxy.encode(first), partners=2)
    got = dict(zip(r.keys.to_pylist(), r.ratings.tolist()))
    assert np.allclose([got[k] for k in first["key"]], expected.numpy(), atol=1e-5)
    # an encoded batch rates the same as the raw one
    enc = _encode(8, 0.5, 1, "x")
    raw = collate(make_samples(8, 0.5, 1, "x"))
    assert torch.allclose(scorer.rate_encoded(enc.take(range(8))), scorer.rate_encoded(proxy.encode(raw)))


def test_declared_ends_drive_shift_gaussian_head():
    n = 1000
    ratings = np.linspace(1.0, 0.0, n)  # key i has rank i
    keys = [f"k{i:04d}" for i in range(n)]
    plain = Ratings.from_arrays(keys, ratings)
    easy = Ratings(plain.keys, plain.ratings, ranking={"objective": "regression", "head": "easy", "tail": "noise"})
    clean = Ratings(plain.keys, plain.ratings, ranking={"objective": "contrast", "head": "clean", "tail": "noise"})
    sg = ShiftGaussian()  # head="auto"
    top = set(range(100))
    kept_easy = set(sg.select(easy, 0.5, seed=0).indices.tolist())
    kept_clean = set(sg.select(clean, 0.5, seed=0).indices.tolist())
    kept_plain = set(sg.select(plain, 0.5, seed=0).indices.tolist())
    assert not kept_easy & set(range(200))  # the too-easy head (n = 0.2) is dropped
    assert kept_plain == kept_easy  # nothing declared: the official (easy-head) behaviour
    assert top <= kept_clean  # a clean head is kept ...
    assert len(kept_clean & set(range(800, 1000))) < 5  # ... and the noisy tail avoided
    sel = sg.select(clean, 0.5, seed=0)
    assert sel.meta["params"]["head"] == "keep" and sel.meta["params"]["head_declared"] == "clean"
    assert sel.meta["params"]["n"] == 0.0 and sel.meta["params"]["head_asked"] == "auto"
    # an unset sigma follows the head: the narrow soft top-K on a clean head, the paper's width on a dropped one
    assert sel.meta["params"]["sigma"] == ShiftGaussian.KEEP_SIGMA == 0.1
    assert sg.select(easy, 0.5).meta["params"]["sigma"] == ShiftGaussian.DROP_SIGMA == 0.2
    # at keep 0.5 the narrow top reaches less far into the bottom half than the paper's width would
    wide = set(ShiftGaussian(sigma=0.2).select(clean, 0.5, seed=0).indices.tolist())
    assert len(kept_clean - set(range(500))) < len(wide - set(range(500)))
    assert ShiftGaussian(sigma=0.3).select(clean, 0.5).meta["params"]["sigma"] == 0.3
    # an explicit head overrides the declaration
    forced = ShiftGaussian(head="drop").select(clean, 0.5, seed=0)
    assert not set(forced.indices.tolist()) & set(range(200))
    with pytest.raises(ConfigError, match="selection.head"):
        build_strategy({"name": "shift_gauss", "head": "middle"})
    soft = sg.soft(clean, 0.5)
    assert soft.weights[0] > soft.weights[500] > soft.weights[999]


def test_scorer_checkpoint_roundtrip_through_load_rater(tmp_path):
    from lightning_alchemist.rater.scoring import load_rater

    torch.manual_seed(0)
    proxy = ToyProxy()
    spec = {"model": {"class": "rater_toys.ToyProxy", "kwargs": {}}}
    scorer = ProxyScorer(proxy, {"objective": "contrast", "score_with": "proxy", "warmup": {"steps": 10}},
                         proxy_spec=spec, info={"warmup": {"steps_run": 10}})
    path = scorer.save(tmp_path / "rater.ckpt")
    loaded = load_rater(path)  # the scoring stage's loader: a direct-scoring checkpoint gives the scorer
    assert isinstance(loaded, ProxyScorer) and loaded.cfg.objective == "contrast" and loaded.info["warmup"]["steps_run"] == 10
    enc = _encode(8, 0.5, 1, "x").take(range(8))
    assert torch.allclose(loaded.rate_encoded(enc), scorer.rate_encoded(enc))
    dm = ToyScoreData(num_shards=2, per_shard=8, batch_size=8)
    a = score(scorer, dm, tmp_path / "a", trainer_kwargs={"enable_progress_bar": False})
    b = score(loaded, ToyScoreData(num_shards=2, per_shard=8, batch_size=8), tmp_path / "b", trainer_kwargs={"enable_progress_bar": False})
    assert a["fingerprint"] == b["fingerprint"]  # same weights and signal: a rerun trusts the files


def test_encoded_loader_epochs_are_seeded_permutations_of_full_batches():
    from lightning_alchemist.rater.encodes import EncodedLoader

    data = toy_set(20)
    loader = EncodedLoader(data, 8, seed=3)
    assert len(loader) == 2
    first = [k for b in loader for k in b["key"]]
    assert len(first) == 16 and len(set(first)) == 16 and all(b["encoded"] for b in loader)
    assert first == [k for b in loader for k in b["key"]]  # same epoch, same order
    loader.set_epoch(1)
    assert first != [k for b in loader for k in b["key"]]
    assert len(EncodedLoader(data, 8, shuffle=False, drop_last=False)) == 3


def test_warmup_lr_ramps_then_decays_to_final_factor():
    from lightning_alchemist.rater.warmup import warmup_lr_factor

    cfg = WarmupConfig(steps=120, ramp_steps=20, final_factor=0.1)
    assert warmup_lr_factor(10, cfg) == pytest.approx(0.5)
    assert warmup_lr_factor(20, cfg) == pytest.approx(1.0)
    assert warmup_lr_factor(70, cfg) == pytest.approx(0.55)
    assert warmup_lr_factor(120, cfg) == pytest.approx(0.1)
    assert warmup_lr_factor(500, WarmupConfig(steps=500)) == 1.0  # constant by default
