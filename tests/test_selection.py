"""Pruning strategies, rank order, the selection manifest, the Hydra group and the select recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.selection import (
    STRATEGIES,
    Block,
    BottomK,
    Curriculum,
    Gsample,
    Random,
    Ratings,
    Selection,
    ShiftGaussian,
    TopK,
    build_strategy,
)
from lightning_alchemist.selection.draw import gumbel_top_k, make_rng, permutation, rank_order, weighted_draw
from lightning_alchemist.selection.manifest import META_KEY
from lightning_alchemist.selection.plot import kept_mask, kept_share_by_percentile
from lightning_alchemist.selection.schedule import curriculum_bin_weights

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL = [ShiftGaussian(), Gsample(), TopK(), BottomK(), Block(0.3), Random(), Curriculum(epochs=10)]


def make_ratings(n: int, seed: int = 0) -> Ratings:
    return Ratings.from_arrays([f"key{i:07d}" for i in range(n)], np.random.default_rng(seed).standard_normal(n))


def ranks_of(ratings: Ratings) -> np.ndarray:
    ranks = np.empty(len(ratings), dtype=np.int64)
    ranks[np.argsort(-ratings.ratings, kind="stable")] = np.arange(len(ratings))
    return ranks


def test_rank_order_is_exact_stable_descending():
    rng = np.random.default_rng(3)
    for values in (
        rng.standard_normal(20_000),
        rng.integers(0, 5, 3_000).astype(float),  # many exact ties
        np.float32(0.25) + 1e-12 * rng.integers(0, 50, 3_000),  # equal in float32, different in float64
        np.array([1.0, -0.0, 0.0, -1e-300, 1e300, -np.inf, np.inf]),
        np.array([1.0, -0.0, 0.0, -1e-300, 1e300, -1e300, 5e-324]),  # finite, huge range: quantised path
        np.concatenate([rng.standard_normal(5000), [1e9, -1e9]]),  # outliers: coarse keys, many ties
        np.full(100, 3.0),
        np.array([1.7e308, -1.7e308, 0.0, 1.0]),  # range overflows: float32 path
    ):
        assert (rank_order(values) == np.argsort(-values, kind="stable")).all()


@pytest.mark.parametrize("n,keep", [(1000, 0.3), (997, 0.5), (10, 0.15), (2_000, 0.9), (333, 1.0)])
@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_every_strategy_keeps_round_keep_n_and_is_deterministic(strategy, n, keep):
    ratings = make_ratings(n)
    if isinstance(strategy, Block) and round(0.3 * n) + round(keep * n) > n:
        pytest.skip("block past the end (tested separately)")
    a, b = strategy.select(ratings, keep, seed=7), strategy.select(ratings, keep, seed=7)
    k = round(keep * n)
    if isinstance(strategy, Curriculum):
        for epoch in (0, 5):
            rows = strategy.epoch_indices(a, epoch, seed=7)
            assert len(rows) == k == len(np.unique(rows))
            assert (rows == strategy.epoch_indices(b, epoch, seed=7)).all()
        return
    assert len(a) == k == a.meta["num_kept"] and len(set(a.keys.to_pylist())) == k
    assert a.keys.to_pylist() == b.keys.to_pylist() and a.fingerprint == b.fingerprint
    assert a.meta["strategy"] == strategy.name and a.meta["num_rated"] == n
    assert a.meta["ratings_fingerprint"] == ratings.fingerprint
    forced = isinstance(strategy, ShiftGaussian) and strategy.head_size(n, k) + k == n  # keep > 1 - n
    if isinstance(strategy, (ShiftGaussian, Random)) and 0 < k < n and not forced:
        assert strategy.select(ratings, keep, seed=8).keys.to_pylist() != a.keys.to_pylist()


def test_deterministic_strategies_have_their_shape():
    ratings = make_ratings(1000)
    ranks = ranks_of(ratings)
    assert sorted(ranks[TopK().select(ratings, 0.2).indices]) == list(range(200))
    assert sorted(ranks[BottomK().select(ratings, 0.2).indices]) == list(range(800, 1000))
    assert sorted(ranks[Block(0.4).select(ratings, 0.2).indices]) == list(range(400, 600))
    with pytest.raises(ConfigError, match="lower selection.start"):
        Block(0.9).select(ratings, 0.2)


def test_shift_gaussian_drops_the_head_and_shrinks_it_when_keep_is_large():
    ratings = make_ratings(10_000)
    ranks = ranks_of(ratings)
    for keep in (0.1, 0.5, 0.8):  # keep <= 1 - n: nothing from the head u < 0.2
        assert ranks[ShiftGaussian().select(ratings, keep).indices].min() >= 2000
    kept = ranks[ShiftGaussian().select(ratings, 0.9).indices]  # head shrinks to 1 - keep
    assert sorted(kept) == list(range(1000, 10_000))
    assert ranks[ShiftGaussian(n=0.3).select(ratings, 0.75).indices].min() == 2500


def expected_inclusion(log_w: np.ndarray, k: int) -> np.ndarray:
    """Inclusion probabilities of Gumbel-top-k for large N: 1 - exp(-c p_i), with c fixing the total at k."""
    p = np.exp(log_w - log_w.max())
    lo, hi = 0.0, 1e6
    for _ in range(200):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if (1 - np.exp(-c * p)).sum() < k else (lo, c)
    return 1 - np.exp(-c * p)


@pytest.mark.parametrize("strategy,keep", [(ShiftGaussian(), 0.3), (Gsample(), 0.2), (ShiftGaussian(0.1, 0.7, 0.1), 0.1),
                                           (ShiftGaussian(head="keep"), 0.3), (ShiftGaussian(head="keep", sigma=0.3), 0.5)])
def test_gaussian_strategies_follow_the_gaussian_per_percentile_bin(strategy, keep):
    n, bins = 100_000, 20
    ratings = make_ratings(n, seed=1)
    sel = strategy.select(ratings, keep, seed=3)
    share = kept_share_by_percentile(ratings, kept_mask(ratings, sel), bins)
    u = np.arange(n) / n
    strategy = strategy.resolved(ratings)  # the reference reads the applied n, mu, sigma
    head = strategy.head_size(n, round(keep * n))
    log_w = np.where(np.arange(n) < head, -np.inf, strategy.log_weights(u))
    expect = expected_inclusion(log_w, round(keep * n)).reshape(bins, -1).mean(axis=1)
    per_bin = n // bins
    se = np.sqrt(np.maximum(expect * (1 - expect), 1e-4) / per_bin)
    assert np.all(np.abs(share - expect) < 5 * se + 1e-9), np.c_[share, expect]
    # the peak is where mu says, and the share is the Gaussian's shape (monotone away from mu)
    assert abs((np.argmax(share) + 0.5) / bins - strategy.mu) <= 1.5 / bins


def test_curriculum_moves_from_top_bins_to_bottom_bins():
    w0, w_mid, w_end = curriculum_bin_weights(0, 10), curriculum_bin_weights(5, 10), curriculum_bin_weights(10, 10)
    assert w0[0] == pytest.approx(1) and w0[9] == pytest.approx(0) and np.all(np.diff(w0) < 0)
    assert w_end[9] == pytest.approx(1) and w_end[0] == pytest.approx(0)
    assert 3 <= np.argmax(w_mid) <= 6
    ratings = make_ratings(5000)
    strategy = Curriculum(num_bins=10, epochs=4)
    sel = strategy.select(ratings, 0.3)
    assert len(sel) == 5000 and np.bincount(sel.bins).tolist() == [500] * 10
    ranks = ranks_of(ratings)
    assert (sel.bins == ranks * 10 // 5000).all()  # bin 0 = highest ratings
    mean_bin = [sel.bins[strategy.epoch_indices(sel, e)].mean() for e in range(5)]
    assert all(a < b for a, b in zip(mean_bin, mean_bin[1:])) and mean_bin[0] < 3.5 and mean_bin[-1] > 5.5
    open_ended = Curriculum().select(ratings, 0.3)  # epochs: null -> the trainer's max_epochs
    with pytest.raises(DataError, match="leaves 'epochs' open"):
        open_ended.epoch_weights(0)
    assert (open_ended.epoch_weights(2, epochs=4) == sel.epoch_weights(2)).all()


def test_gumbel_top_k_is_exact_and_handles_zero_weights():
    rng = make_rng(0)
    w = np.array([1.0, 2.0, 4.0, 0.0])
    # k=1 draws are ∝ w
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    counts = np.bincount([gumbel_top_k(log_w, 1, make_rng(i))[0] for i in range(4000)], minlength=4)
    assert counts[3] == 0 and abs(counts[2] / 4000 - 4 / 7) < 0.03 and abs(counts[0] / 4000 - 1 / 7) < 0.03
    # more draws than positive weights: all positives, then zero-weight fill
    with np.errstate(divide="ignore"):
        top = gumbel_top_k(np.log(np.array([0, 1.0, 0, 0, 2.0])), 3, rng)
    assert {1, 4} <= set(top.tolist()) and len(set(top.tolist())) == 3
    assert sorted(weighted_draw(np.array([1.0, 0.0, 3.0]), 3, False, rng).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        weighted_draw(np.array([1.0, 0.0]), 3, False, rng)
    big = np.arange(2_000_003)
    perm = permutation(big, make_rng(1))
    assert (np.sort(perm) == big).all() and (perm != big).mean() > 0.99
    assert (permutation(big, make_rng(1)) == perm).all()


def test_manifest_roundtrip_and_plain_pyarrow(tmp_path):
    ratings = make_ratings(1000)
    sel = ShiftGaussian().select(ratings, 0.25, seed=5)
    path = sel.write(tmp_path / "sel" / "selection.parquet")
    table = pq.read_table(path)  # plain pyarrow
    assert table.column_names == ["key", "weight"] and table.num_rows == 250
    import json

    meta = json.loads(table.schema.metadata[META_KEY])
    # the params as applied, with the head mode asked for and the one the ratings declared (none here)
    assert meta["strategy"] == "shift_gauss" and meta["params"] == {
        "n": 0.2, "mu": 0.6, "sigma": 0.2, "head": "drop", "head_asked": "auto", "head_declared": None}
    assert meta["keep"] == 0.25 and meta["seed"] == 5 and meta["num_rated"] == 1000 and meta["num_kept"] == 250
    assert meta["ratings_fingerprint"] == ratings.fingerprint
    back = Selection.read(tmp_path / "sel")  # a folder means its selection.parquet
    assert back.keys.to_pylist() == sel.keys.to_pylist() and back.fingerprint == sel.fingerprint
    assert back.meta["params"] == sel.meta["params"]
    cur = Curriculum(epochs=3).select(ratings, 0.5)
    back = Selection.read(cur.write(tmp_path / "c.parquet"))
    assert (back.bins == cur.bins).all() and back.schedule == cur.schedule
    assert (back.epoch_weights(1) == cur.epoch_weights(1)).all()
    with pytest.raises(DataError, match="does not exist"):
        Selection.read(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="non-negative"):
        Selection.from_keys(["a"], [-1.0])


@pytest.mark.parametrize("name", sorted(STRATEGIES) + ["none"])
def test_hydra_group_builds_each_strategy(name):
    from helpers import compose

    strategy = build_strategy(compose("config", [f"selection={name}"]).selection)
    assert (strategy is None) if name == "none" else (strategy.name == name)
    if strategy is not None:  # the schema's defaults are the strategy class's own (one source of defaults)
        assert strategy == type(strategy)()


def test_build_strategy_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        build_strategy({"name": "nope"})
    with pytest.raises(ConfigError, match=r"selection\.sgima"):
        build_strategy({"name": "shift_gauss", "sgima": 0.1})
    with pytest.raises(ConfigError, match="selection.sigma"):
        build_strategy({"name": "shift_gauss", "sigma": 0})
    with pytest.raises(ConfigError, match="keep"):
        ShiftGaussian().select(make_ratings(10), 0.0)


def test_select_recipe_writes_manifest_and_histogram(tmp_path):
    from helpers import compose
    from lightning_alchemist.selection.recipe import run_select

    make_ratings(2000).write(tmp_path / "ratings", "shard-000000", fingerprint="scorer-1")
    cfg = compose(
        "select", [f"ratings={tmp_path / 'ratings'}", "selection=gsample", "keep=0.4", f"out={tmp_path}"]
    )
    out = run_select(cfg)
    sel = Selection.read(out["selection"])
    assert len(sel) == 800 and sel.meta["strategy"] == "gsample"
    assert sel.meta["scoring_fingerprints"] == ["scorer-1"]
    assert out["histogram"].stat().st_size > 10_000
    cfg = compose("select", [f"ratings={tmp_path / 'ratings'}", "soft=true", "keep=0.4", f"out={tmp_path}/soft"])
    soft = Selection.read(run_select(cfg)["selection"])
    assert len(soft) == 2000 and soft.samples_per_epoch() == 800 and (soft.weights == 0).sum() == 400
    root = compose("config", [])
    assert build_strategy(root.selection).name == "shift_gauss"  # the default of the root config


def test_select_recipe_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "select_data.py"
    make_ratings(500).write(tmp_path / "ratings", "shard-000000")
    ok = subprocess.run(
        [sys.executable, str(recipe), f"ratings={tmp_path / 'ratings'}", "selection=topk", "keep=0.2", f"out={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(Selection.read(tmp_path / "selection.parquet")) == 100
    assert (tmp_path / "selection_histogram.png").is_file()
    bad = subprocess.run(
        [sys.executable, str(recipe), f"ratings={tmp_path / 'nope'}", f"out={tmp_path}"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
