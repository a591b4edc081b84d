"""Samplers: subset / weighted modes, (seed, epoch) determinism, DDP sharding, 2^24+ and 30M items."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lightning_alchemist.sampling import DistributedWeightedSubsetSampler, WeightedSubsetSampler
from lightning_alchemist.selection import Curriculum, Ratings


def test_subset_mode_is_a_fresh_shuffle_of_exactly_the_kept_samples():
    kept = np.array([3, 7, 8, 20, 21, 50, 99])
    s = WeightedSubsetSampler(kept, seed=1)
    epochs = []
    for epoch in range(4):
        s.set_epoch(epoch)
        order = list(s)
        assert sorted(order) == kept.tolist() and len(s) == len(kept)
        assert all(type(i) is int for i in order)
        epochs.append(order)
    assert len({tuple(o) for o in epochs}) > 1  # a new order per epoch
    # the order depends only on (seed, epoch): a second instance (another rank) agrees
    other = WeightedSubsetSampler(kept, seed=1)
    other.set_epoch(2)
    assert list(other) == epochs[2]


def test_weighted_mode_with_and_without_replacement():
    idx = np.arange(10, 20)
    w = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 6], dtype=float)
    with_rep = WeightedSubsetSampler(idx, w, mode="weighted", num_samples=20_000, replacement=True, seed=0)
    counts = np.bincount(list(with_rep), minlength=20)[10:]
    assert counts[:5].sum() == 0 and len(with_rep) == 20_000
    assert abs(counts[9] / 20_000 - 0.6) < 0.02 and abs(counts[5] / 20_000 - 0.1) < 0.015
    without = WeightedSubsetSampler(idx, w, mode="weighted", num_samples=4, seed=0)
    draws = [tuple(sorted(without.order(e).tolist())) for e in range(300)]
    assert all(len(set(d)) == 4 and set(d) <= {15, 16, 17, 18, 19} for d in draws)
    assert sum(19 in d for d in draws) > 290  # the heavy one is almost always drawn
    with pytest.raises(ValueError, match="positive weight"):
        WeightedSubsetSampler(idx, w, mode="weighted", num_samples=6)
    with pytest.raises(ValueError, match="mode"):
        WeightedSubsetSampler(idx, mode="bogus")


def test_curriculum_weights_change_in_set_epoch():
    ratings = Ratings.from_arrays([f"k{i}" for i in range(1000)], np.linspace(1, 0, 1000))  # rank = index
    sel = Curriculum(epochs=4).select(ratings, 0.3)
    s = WeightedSubsetSampler(np.arange(1000), mode="weighted", num_samples=300, epoch_weights=sel.epoch_weights, seed=0)
    means = []
    for epoch in range(5):
        s.set_epoch(epoch)
        order = np.array(list(s))
        assert len(order) == 300 == len(np.unique(order))
        means.append(order.mean())
    assert all(a < b for a, b in zip(means, means[1:]))  # from the top-rated (low index) to the bottom


def shares(sampler_factory, world: int, epoch: int) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = sampler_factory(rank)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize("mode", ["subset", "weighted"])
def test_distributed_shares_are_disjoint_equal_and_complete(mode):
    kept = np.arange(0, 2000, 3)[:600]  # 600 = divisible by 2 and 3
    for world in (2, 3):
        def factory(rank):
            base = WeightedSubsetSampler(kept, mode=mode, seed=4)
            return DistributedWeightedSubsetSampler(base, num_replicas=world, rank=rank)

        parts = shares(factory, world, epoch=1)
        assert len({len(p) for p in parts}) == 1
        flat = [i for p in parts for i in p]
        assert len(flat) == len(set(flat)) and sorted(flat) == kept.tolist()
        assert shares(factory, world, epoch=2) != parts
    # uneven: padded like DistributedSampler, still covers everything
    parts = shares(lambda r: DistributedWeightedSubsetSampler(WeightedSubsetSampler(kept[:7]), 2, r), 2, 0)
    assert [len(p) for p in parts] == [4, 4] and set(parts[0] + parts[1]) == set(kept[:7].tolist())


def test_lightning_wrapper_slices_one_shared_order():
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    kept = np.arange(100, 400)
    parts = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(WeightedSubsetSampler(kept, seed=9), num_replicas=2, rank=rank, shuffle=True)
        wrapper.set_epoch(3)  # forwarded to our sampler
        parts.append(list(wrapper))
    assert set(parts[0]).isdisjoint(parts[1]) and sorted(parts[0] + parts[1]) == kept.tolist()


def test_state_dict_roundtrip():
    s = WeightedSubsetSampler(np.arange(50), seed=3)
    s.set_epoch(5)
    t = WeightedSubsetSampler(np.arange(50), seed=0)
    t.load_state_dict(s.state_dict())
    assert list(t) == list(s)


def test_beyond_torch_multinomial_limit():
    n = 2**24 + 1
    rng = np.random.default_rng(0)
    w = np.zeros(n)
    w[-1000:] = 1.0  # all the mass beyond index 2^24 - 1000: wrong offsets would show
    s = WeightedSubsetSampler(np.arange(n), w, mode="weighted", num_samples=1000, seed=0)
    order = s.order()
    assert sorted(order.tolist()) == list(range(n - 1000, n))
    w = rng.random(n)
    s = WeightedSubsetSampler(np.arange(n), w, mode="weighted", num_samples=4096, replacement=True, seed=1)
    drawn = s.order()
    assert drawn.min() >= 0 and drawn.max() < n and drawn.dtype == np.int32


def test_thirty_million_items_fast():
    n = 30_000_000
    # with replacement over 30M weights: the last few are heavy, the rest share the same mass
    w = np.ones(n, dtype=np.float64)
    w[-10:] = (n - 10) / 10  # half the mass on the last 10 items
    start = time.perf_counter()
    s = WeightedSubsetSampler(np.arange(n, dtype=np.int32), w, mode="weighted", num_samples=20_000, replacement=True, seed=0)
    order = s.order()
    elapsed = time.perf_counter() - start
    assert abs((order >= n - 10).mean() - 0.5) < 0.02 and order.max() < n
    dist = DistributedWeightedSubsetSampler(s, num_replicas=2, rank=1)
    assert len(dist) == 10_000 and (dist.rank_order() == order[1::2]).all()
    assert elapsed < 10, elapsed


def test_skip_once_resumes_inside_an_epoch_then_resets():
    base = WeightedSubsetSampler(np.arange(40), seed=2)
    dist = DistributedWeightedSubsetSampler(base, num_replicas=2, rank=1)
    dist.set_epoch(3)
    share = list(dist)
    dist.skip_once(3, 5)
    assert list(dist) == share[5:] and len(dist) == 20
    assert list(dist) == share  # one-shot
    base.set_epoch(4)
    base.skip_once(3, 5)  # another epoch: ignored
    assert len(list(base)) == 40
