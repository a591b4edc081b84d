"""Curation stages: embeddings fallback and sidecars, SemDeDup, concept-cluster budgets, rebalancing, the plan."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lightning_alchemist.curation import (
    CurationConfig,
    Embeddings,
    EmbeddingsConfig,
    cluster,
    cluster_budgets,
    cluster_complexity,
    curate,
    embeddings_from_ratings,
    load_sidecar,
    priority,
    rebalance_weights,
    semdedup,
    thumbnail_embeddings,
)
from lightning_alchemist.curation.budgets import intra_distances
from lightning_alchemist.curation.embeddings import normalise_rows
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings


def _unit(rng, n, d):
    return normalise_rows(rng.standard_normal((n, d)))


# ----------------------------------------------------------------------------- budgets


def test_spread_cluster_gets_the_larger_budget_and_budgets_sum_exactly():
    rng = np.random.default_rng(0)
    d = 16
    a, b = _unit(rng, 2, d)
    tight = normalise_rows(a + 0.02 * rng.standard_normal((300, d)))
    spread = normalise_rows(b + 0.15 * rng.standard_normal((300, d)))
    x = np.concatenate([tight, spread])
    cl = cluster(x, k=2, seed=0)
    assert set(np.bincount(cl.labels)) == {300}  # k-means finds the two groups
    d_intra = intra_distances(cl.labels, cl.distances, 2)
    complexity = cluster_complexity(cl.centroids, d_intra)
    budgets = cluster_budgets(cl.sizes(), complexity, 300, tau=0.05)
    spread_id = int(cl.labels[-1])
    assert budgets.sum() == 300
    assert budgets[spread_id] > budgets[1 - spread_id] >= 75  # the floor m = 300 / 2 · 0.5


@pytest.mark.parametrize("seed", range(6))
def test_budgets_sum_exactly_within_floor_and_cap(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 40))
    sizes = rng.integers(0, 200, k)
    sizes[0] = max(sizes[0], 1)
    complexity = rng.random(k)
    for total in sorted({0, 1, int(sizes.sum()) // 3, int(sizes.sum()) // 2, int(sizes.sum()) - 1, int(sizes.sum())}):
        b = cluster_budgets(sizes, complexity, total, tau=float(rng.choice([0.05, 0.5, 5.0])))
        assert b.sum() == total and (b <= sizes).all()
        floor = int(total / k * 0.5)
        assert (b >= np.minimum(floor, sizes)).all()
    with pytest.raises(ConfigError, match="samples asked"):
        cluster_budgets(sizes, complexity, int(sizes.sum()) + 1)


def test_budgets_follow_the_softmax_of_complexity():
    sizes = np.array([1000, 1000, 1000])
    b = cluster_budgets(sizes, np.array([0.0, 0.0, np.log(2.0)]), 400, tau=1.0, floor=0)
    assert b.tolist() == [100, 100, 200]


# ----------------------------------------------------------------------------- dedup


def _planted(seed=0, n=300, d=32, groups=20, copies=2):
    rng = np.random.default_rng(seed)
    x = _unit(rng, n, d)
    sources = rng.choice(n, groups, replace=False)
    rows, members = [x], {}
    nxt = n
    for s in sources:
        ids = [int(s)]
        for _ in range(copies):
            rows.append(normalise_rows(x[s] + 0.005 * rng.standard_normal((1, d))))
            ids.append(nxt)
            nxt += 1
        members[int(s)] = ids
    return np.concatenate(rows), members


def test_dedup_removes_planted_copies_and_keeps_the_configured_one():
    x, members = _planted()
    cl = cluster(x, k=8, seed=0)
    n = len(x)
    ratings = np.random.default_rng(1).random(n)
    for group in members.values():  # the last copy is rated highest in its group
        ratings[group[-1]] = 10.0
    res = semdedup(x, cl.labels, cl.k, 0.05, priority("rating", cl.distances, ratings))
    assert res.dropped == sum(len(g) - 1 for g in members.values())
    for group in members.values():
        kept = [i for i in group if res.keep[i]]
        assert kept == [group[-1]]
        assert all(res.dup_of[i] == group[-1] for i in group[:-1])
    central = semdedup(x, cl.labels, cl.k, 0.05, priority("central", cl.distances))
    for group in members.values():
        kept = [i for i in group if central.keep[i]]
        assert kept == [group[int(np.argmin(cl.distances[group]))]]
    r1 = semdedup(x, cl.labels, cl.k, 0.05, priority("random", cl.distances, seed=3))
    r2 = semdedup(x, cl.labels, cl.k, 0.05, priority("random", cl.distances, seed=3))
    assert np.array_equal(r1.keep, r2.keep) and r1.dropped == res.dropped
    # clusters larger than max_cluster are split by their own k-means first: the planted copies still go
    split = semdedup(x, cl.labels, cl.k, 0.05, priority("rating", cl.distances, ratings), max_cluster=20)
    assert np.array_equal(split.keep, res.keep)
    # eps 0 keeps everything that is not an exact copy
    assert semdedup(x, cl.labels, cl.k, 0.0, priority("central", cl.distances)).dropped == 0


def test_dedup_is_exact_greedy_across_blocks():
    """a ~ b ~ c with a ≁ c: greedy keeps a and c (the 'any earlier' shortcut would drop c); blocks do not matter."""
    d = 8
    a = np.zeros(d)
    a[0] = 1
    c = np.zeros(d)
    c[1] = 1
    b = normalise_rows((a + c)[None])[0]  # cos(a, b) = cos(b, c) = 0.707
    x = normalise_rows(np.stack([a, b, c]))
    labels = np.zeros(3, dtype=np.int32)
    prio = np.array([3.0, 2.0, 1.0])
    for block in (1, 2, 1024):
        res = semdedup(x, labels, 1, 0.35, prio, block=block)
        assert res.keep.tolist() == [True, False, True] and res.dup_of[1] == 0


# ----------------------------------------------------------------------------- rebalancing


def test_dedup_on_shapes_finds_the_copy_groups_and_spares_distinct_clean_samples():
    """shapes' duplicates are genuine copies (same pixels, or a high-quality JPEG of them): at the default eps and at
    a tight one dedup leaves one member of each copy group and drops no clean sample whose scene is not also elsewhere
    in the pool. (The former re-rendered near-copies, at cosine 0.988–0.999 to their source, kept two members in
    60–70 % of the groups at eps 0.002.)"""
    import io
    from collections import Counter

    from lightning_alchemist.config import ShapesConfig
    from lightning_alchemist.data.shapes import _duplicate_sources, defect_plan, make_sample
    from lightning_alchemist.selection.strategies import Random

    cfg = ShapesConfig(num_pool=400, resolution=32, defects={"plain": 0.08, "chaotic": 0.08, "mismatch": 0.08,
                                                              "duplicate": 0.2, "degraded": 0.08})
    kinds = defect_plan(cfg)
    sources = _duplicate_sources(cfg, kinds)
    samples = [make_sample(cfg, "pool", i, kinds[i], sources.get(i)) for i in range(cfg.num_pool)]
    images = [Image.open(io.BytesIO(s["png"])).convert("RGB") for s in samples]
    keys = [s["__key__"] for s in samples]
    emb = thumbnail_embeddings(images, [s["txt"] for s in samples], keys, EmbeddingsConfig())
    group = np.full(cfg.num_pool, -1)
    for copy, source in sources.items():
        group[copy] = group[source] = sorted(set(sources.values())).index(source)
    # A clean sample may share its scene with another sample (one-object scenes repeat; a degraded sample is a blurred
    # or downscaled scene, which the blurred thumbnail barely tells from its clean twin): those may go, no other.
    scenes = Counter(s["txt"] for s in samples)
    clean = np.array([kinds[i] == "clean" and group[i] < 0 for i in range(len(keys))])
    distinct_clean = clean & np.array([scenes[s["txt"]] == 1 for s in samples])
    ratings = Ratings.from_arrays(keys, np.zeros(len(keys)))
    for eps in (CurationConfig().eps, 0.002):
        for seed in range(3):
            res = curate(ratings, emb, CurationConfig(name="dedup", dedup=True, eps=eps), Random(), 0.5, seed=seed,
                         has_ratings=False)
            kept = np.isin(keys, res.selection.keys.to_pylist())
            assert (np.bincount(group[kept & (group >= 0)], minlength=group.max() + 1) > 1).mean() <= 0.05
            prov = res.provenance.to_pydict()
            gone = [k for k, st, kp in zip(prov["key"], prov["stage"], prov["kept"]) if st == "dedup" and not kp]
            dropped = np.isin(keys, gone)
            survivors = np.bincount(group[~dropped & (group >= 0)], minlength=group.max() + 1)
            assert (survivors == 1).all()  # dedup leaves one member of each group (the content stays)
            assert not (dropped & distinct_clean).any() and (dropped & clean).sum() <= 0.02 * clean.sum()


def test_rebalancing_flattens_a_long_tail():
    counts = np.array([800, 150, 40, 10])
    labels = np.repeat(np.arange(4), counts)
    for mode, power in (("uniform", 0.0), ("sqrt", 0.5), ("temperature", 0.25)):
        w = rebalance_weights(labels, mode, temperature=power)
        totals = np.bincount(labels, weights=w)
        assert np.isclose(w.mean(), 1.0)
        expected = counts**power / (counts**power).sum()
        assert np.allclose(totals / totals.sum(), expected)
    assert np.allclose(rebalance_weights(labels, "none"), 1.0)
    assert np.allclose(rebalance_weights(labels, "temperature", temperature=1.0), 1.0)
    with pytest.raises(ConfigError, match="curation.rebalance"):
        rebalance_weights(labels, "log")


# ----------------------------------------------------------------------------- embeddings


def _scene(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size, 3), dtype=np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    for _ in range(3):
        x0, y0 = rng.integers(0, size - 16, 2)
        arr[y0:y0 + 16, x0:x0 + 16] = rng.integers(0, 255, 3, dtype=np.uint8)
    return Image.fromarray(arr)


def test_fallback_embeddings_are_deterministic_and_catch_copies():
    images = [_scene(i) for i in range(40)]
    captions = [f"scene number {i} with {['red', 'blue', 'green'][i % 3]} squares" for i in range(40)]
    noisy = np.clip(np.asarray(images[0], dtype=np.float32) + np.random.default_rng(0).normal(0, 3, (64, 64, 3)), 0, 255)
    shifted = Image.fromarray(np.roll(np.asarray(images[1]), 2, axis=1))  # two pixels of jitter
    images += [images[0].copy(), Image.fromarray(noisy.astype(np.uint8)), shifted]
    captions += [captions[0], captions[0], captions[1]]
    keys = [f"k{i}" for i in range(len(images))]
    cfg = EmbeddingsConfig(dim=64)
    e1 = thumbnail_embeddings(images, captions, keys, cfg)
    e2 = thumbnail_embeddings(images, captions, keys, cfg)
    assert np.array_equal(e1.vectors, e2.vectors) and e1.vectors.shape == (43, 64)
    assert np.allclose(np.linalg.norm(e1.vectors, axis=1), 1.0, atol=1e-5)
    sims = e1.vectors @ e1.vectors.T
    assert sims[0, 40] > 0.9999  # an exact copy under another key
    assert sims[0, 41] > 0.98    # faint noise
    assert sims[1, 42] > 0.98    # a shift: the blur before the thumbnail absorbs it
    sharp = thumbnail_embeddings(images, captions, keys, EmbeddingsConfig(dim=64, blur=0.0)).vectors
    assert float(sharp[1] @ sharp[42]) < sims[1, 42]
    others = sims[:40, :40][~np.eye(40, dtype=bool)]
    assert others.max() < 0.9
    other_seed = thumbnail_embeddings(images, captions, keys, EmbeddingsConfig(dim=64, seed=1))
    assert not np.allclose(other_seed.vectors, e1.vectors)


def test_embeddings_round_trip_and_align(tmp_path):
    emb = Embeddings(["a", "b", "c"], normalise_rows(np.eye(3, 4)), {"source": "test"})
    emb.write(tmp_path / "e")
    back = Embeddings.read(tmp_path / "e")
    assert back.keys.to_pylist() == ["a", "b", "c"] and np.array_equal(back.vectors, emb.vectors)
    rows, found = back.align(["c", "x", "a"])
    assert found.tolist() == [True, False, True] and rows[[0, 2]].tolist() == [2, 0]


def test_user_sidecars_and_ratings_column(tmp_path):
    vecs = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    vecs[3] = np.nan
    np.savez(tmp_path / "e.npz", keys=np.array([f"k{i}" for i in range(5)]), b32_img=vecs)
    side = load_sidecar(tmp_path / "e.npz")
    assert side.keys.to_pylist() == ["k0", "k1", "k2", "k4"] and side.meta["skipped"] == {"bad_vector": 1}
    assert np.allclose(np.linalg.norm(side.vectors, axis=1), 1.0, atol=1e-5)
    np.savez(tmp_path / "two.npz", keys=np.array(["a"]), x=np.ones((1, 2)), y=np.ones((1, 2)))
    with pytest.raises(DataError, match="curation.embeddings.column"):
        load_sidecar(tmp_path / "two.npz")
    table = pa.table({"key": ["a", "b"], "clip": [[1.0, 0.0], [0.0, 2.0]]})
    pq.write_table(table, tmp_path / "e.parquet")
    assert load_sidecar(tmp_path / "e.parquet", column="clip").vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    rdir = tmp_path / "ratings"
    rdir.mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "rating": [0.1, 0.2], "embedding": [[3.0, 4.0], [1.0, 0.0]]}), rdir / "s0.parquet")
    from_ratings = embeddings_from_ratings(rdir)
    assert np.allclose(from_ratings.vectors, [[0.6, 0.8], [1.0, 0.0]])
    pq.write_table(pa.table({"key": ["c"], "rating": [0.3]}), rdir / "s1.parquet")
    with pytest.raises(DataError, match="no 'embedding' column"):
        embeddings_from_ratings(rdir)


# ----------------------------------------------------------------------------- the plan


def _pool(seed=0):
    x, members = _planted(seed, n=400, groups=30, copies=2)
    keys = [f"s{i:04d}" for i in range(len(x))]
    rng = np.random.default_rng(seed)
    ratings = Ratings.from_arrays(keys, rng.random(len(x)))
    order = rng.permutation(len(x))  # embeddings in another order than the ratings: joined by key
    emb = Embeddings([keys[i] for i in order], x[order], {"source": "test"})
    return ratings, emb, members


def test_curate_dedup_then_select_writes_provenance(tmp_path):
    ratings, emb, members = _pool()
    cfg = CurationConfig(name="dedup", dedup=True, clusters=8)
    res = curate(ratings, emb, cfg, None, keep=0.5, seed=0)
    n = len(ratings)
    assert len(res.selection) == round(0.5 * n)
    kept = set(res.selection.keys.to_pylist())
    for group in members.values():
        assert sum(f"s{i:04d}" in kept for i in group) <= 1
    counts = res.summary["counts"]
    assert counts["dedup"] == 60 and counts["kept"] == len(res.selection) and counts["selection"] == n - 60 - len(kept)
    paths = res.write(tmp_path)
    table = pq.read_table(paths["selection"])
    assert {"key", "weight", "cluster", "stage"} <= set(table.column_names)
    assert set(table.column("stage").to_pylist()) == {"selection"}
    back = Selection.read(paths["selection"])
    assert back.keys.to_pylist() == res.selection.keys.to_pylist() and back.meta["curation"]["counts"] == counts
    prov = pq.read_table(paths["provenance"]).to_pydict()
    assert len(prov["key"]) == n and sum(prov["kept"]) == len(kept)
    dropped = [i for i, s in enumerate(prov["stage"]) if s == "dedup"]
    assert len(dropped) == 60 and all(prov["dup_of"][i] in kept or prov["dup_of"][i] is not None for i in dropped)
    # deterministic for a seed
    again = curate(ratings, emb, cfg, None, keep=0.5, seed=0)
    assert again.selection.keys.to_pylist() == res.selection.keys.to_pylist()


def test_curate_dbp_budgets_and_rebalance():
    from lightning_alchemist.selection.strategies import TopK

    ratings, emb, _ = _pool(1)
    cfg = CurationConfig(name="dbp", dedup=True, budgets=True, clusters=6, rebalance="uniform")
    res = curate(ratings, emb, cfg, TopK(), keep=0.3, seed=0)
    assert len(res.selection) == round(0.3 * len(ratings))
    assert sum(res.summary["budgets"]) == len(res.selection)
    assert res.summary["sizes_kept"] == res.summary["budgets"]
    # inside a cluster the rater's top-k: every kept member outranks every budget-dropped one of its cluster
    prov = res.provenance.to_pydict()
    r = dict(zip(ratings.keys.to_pylist(), ratings.ratings.tolist()))
    for j in range(6):
        kept = [r[k] for k, c, s, kk in zip(prov["key"], prov["cluster"], prov["stage"], prov["kept"]) if c == j and kk]
        cut = [r[k] for k, c, s, kk in zip(prov["key"], prov["cluster"], prov["stage"], prov["kept"]) if c == j and not kk and s == "budget"]
        if kept and cut:
            assert min(kept) >= max(cut)
    w = res.selection.weights
    labels = np.asarray(prov["cluster"])[np.asarray(prov["kept"])]
    totals = np.bincount(labels, weights=w)
    assert np.allclose(totals[totals > 0], totals[totals > 0][0]) and res.summary["mode"] == "weighted"


@pytest.mark.parametrize("name", ["shift_gauss", "gsample", "middle", "bottomk", "random"])
def test_every_strategy_fills_cluster_budgets_exactly(name):
    from lightning_alchemist.selection.strategies import Block, build_strategy

    strategy = Block(centre=0.5) if name == "middle" else build_strategy({"name": name})
    ratings, emb, _ = _pool(2)
    for inside in ("rater", "farthest"):
        cfg = CurationConfig(name="dbp", dedup=True, budgets=True, clusters=12, inside=inside)
        res = curate(ratings, emb, cfg, strategy, keep=0.4, seed=1)
        assert len(res.selection) == round(0.4 * len(ratings)) and res.summary["sizes_kept"] == res.summary["budgets"]


def test_curation_config_checks_values_in_one_line():
    from lightning_alchemist.curation import curation_config

    assert not curation_config(None).active
    assert curation_config({"dedup": True}).active
    for bad, key in (({"eps": 1.5}, "curation.eps"), ({"which_to_keep": "best"}, "curation.which_to_keep"),
                     ({"tau": 0}, "curation.tau"), ({"embeddings": {"source": "sidecar"}}, "curation.embeddings.path"),
                     ({"quality_keep": 0}, "curation.quality_keep"), ({"complexity_scale": "log"}, "curation.complexity_scale"),
                     ({"keep_of": "all"}, "curation.keep_of")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
            curation_config(bad)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- composition with a rater


def _noisy_pool(seed: int = 0):
    """Three tight concepts of clean samples and a spread cluster of noise that the ratings put at the bottom."""
    rng = np.random.default_rng(seed)
    d = 16
    centres = _unit(rng, 4, d)
    clean = [normalise_rows(c + 0.05 * rng.standard_normal((100, d))) for c in centres[:3]]
    noise = normalise_rows(centres[3] + 0.6 * rng.standard_normal((100, d)))  # far and spread: "complex"
    x = np.concatenate([*clean, noise]).astype(np.float32)
    keys = [f"s{i:04d}" for i in range(len(x))]
    r = np.concatenate([rng.normal(1.0, 0.3, 300), rng.normal(0.0, 0.3, 100)])  # noise rated lower, overlapping
    return Ratings.from_arrays(keys, r), Embeddings(keys, x), np.arange(300, 400)


def test_quality_filter_keeps_noise_clusters_out_of_the_budgets():
    from lightning_alchemist.selection.strategies import ShiftGaussian

    ratings, emb, noise = _noisy_pool()
    noise_keys = {f"s{i:04d}" for i in noise}
    unfiltered = curate(ratings, emb, CurationConfig(name="dbp", budgets=True, clusters=4, quality_keep=1.0),
                        ShiftGaussian(), keep=0.5, seed=0)
    filtered = curate(ratings, emb, CurationConfig(name="dbp", budgets=True, clusters=4), ShiftGaussian(), keep=0.5, seed=0)
    share = lambda res: len(noise_keys & set(res.selection.keys.to_pylist())) / len(noise_keys)  # noqa: E731
    # without the filter the spread noise cluster gets the largest budget, and inside it every candidate is noise
    assert share(unfiltered) > 0.3
    stage_of = dict(zip(filtered.provenance.column("key").to_pylist(), filtered.provenance.column("stage").to_pylist()))
    passed_noise = sum(stage_of[k] != "quality" for k in noise_keys) / len(noise_keys)  # overlapping ratings: a few pass
    assert share(filtered) <= passed_noise < share(unfiltered) / 3 and len(filtered.selection) == 200
    counts = filtered.summary["counts"]
    assert counts["quality"] == 100 and filtered.summary["quality_keep"] == 0.75  # auto: halfway between keep and 1
    stage = filtered.provenance.column("stage").to_pylist()
    r = ratings.ratings
    assert max(r[[i for i, s in enumerate(stage) if s == "quality"]]) <= min(r[[i for i, s in enumerate(stage) if s != "quality"]])
    # a rating-free run (constant ratings) has nothing to filter by
    flat = Ratings.from_arrays(ratings.keys.to_pylist(), np.zeros(len(ratings)))
    free = curate(flat, emb, CurationConfig(name="dbp", budgets=True, clusters=4), None, keep=0.5, seed=0, has_ratings=False)
    assert "quality" not in free.summary["counts"] and free.summary["quality_keep"] is None


def test_quality_filter_refuses_a_ranking_whose_tail_is_not_noise():
    ratings, emb, _ = _noisy_pool()
    odd = Ratings(ratings.keys, ratings.ratings, ranking={"objective": "x", "head": "clean", "tail": "clean"})
    with pytest.raises(ConfigError, match=r"curation\.quality_keep=1\.0"):
        curate(odd, emb, CurationConfig(name="dbp", budgets=True, clusters=4), None, keep=0.5)
    res = curate(odd, emb, CurationConfig(name="dbp", budgets=True, clusters=4, quality_keep=1.0), None, keep=0.5)
    assert len(res.selection) == 200


def test_dedup_after_the_filter_never_keeps_a_filtered_copy_in_place_of_its_twin():
    rng = np.random.default_rng(3)
    x = _unit(rng, 50, 8)
    x = np.concatenate([x, x[:10]]).astype(np.float32)  # rows 50..59 copy rows 0..9
    keys = [f"s{i:03d}" for i in range(60)]
    r = np.ones(60)
    r[:10] = -5.0  # the originals are rated at the bottom: the filter drops them, their copies survive
    ratings, emb = Ratings.from_arrays(keys, r), Embeddings(keys, x)
    cfg = CurationConfig(name="dbp", dedup=True, budgets=True, clusters=1, which_to_keep="central", quality_keep=50 / 60)
    res = curate(ratings, emb, cfg, None, keep=0.5, seed=0)
    kept = set(res.selection.keys.to_pylist())
    stage = dict(zip(res.provenance.column("key").to_pylist(), res.provenance.column("stage").to_pylist()))
    assert all(stage[f"s{i:03d}"] == "quality" for i in range(10))
    assert res.summary["counts"]["dedup"] == 0 and len(kept) == 30  # the copies are no longer anyone's duplicate
    # semdedup's own mask: rows outside it neither dropped nor kept copies
    alive = np.ones(60, dtype=bool)
    alive[:10] = False
    out = semdedup(normalise_rows(x), np.zeros(60, dtype=np.int64), 1, 0.02, -np.arange(60.0), alive=alive)
    assert out.keep.all()
    assert (~semdedup(normalise_rows(x), np.zeros(60, dtype=np.int64), 1, 0.02, -np.arange(60.0)).keep).sum() == 10


def test_standardised_budgets_do_not_depend_on_the_complexity_scale():
    rng = np.random.default_rng(4)
    sizes = rng.integers(20, 200, 30)
    c = rng.random(30) * 0.05
    total = int(sizes.sum() // 3)
    a = cluster_budgets(sizes, c, total, tau=1.0, standardise=True)
    b = cluster_budgets(sizes, c * 1000 + 7, total, tau=1.0, standardise=True)
    assert np.array_equal(a, b) and a.sum() == total
    # raw: the same complexities scaled up change the budgets (tau is in the embedding's units)
    assert not np.array_equal(cluster_budgets(sizes, c, total, tau=1.0), cluster_budgets(sizes, c * 1000, total, tau=1.0))
    # equal complexities: zero std, shares uniform
    flat = cluster_budgets(np.full(4, 100), np.full(4, 0.3), 200, tau=0.5, standardise=True)
    assert flat.tolist() == [50, 50, 50, 50]


def test_keep_of_survivors_does_not_refill_the_copies_places():
    from lightning_alchemist.selection.strategies import TopK

    ratings, emb, members = _pool()
    n = len(ratings)
    pool = curate(ratings, emb, CurationConfig(name="dedup", dedup=True, clusters=8), TopK(), keep=0.5, seed=0)
    surv = curate(ratings, emb, CurationConfig(name="dedup", dedup=True, clusters=8, keep_of="survivors"), TopK(), keep=0.5, seed=0)
    dropped = surv.summary["counts"]["dedup"]
    assert dropped == 60 and len(pool.selection) == round(0.5 * n)
    assert len(surv.selection) == round(round(0.5 * n) * (n - dropped) / n) and surv.summary["target"] == len(surv.selection)
    # the same rater cut: the smaller selection is the top of the larger one
    r = dict(zip(ratings.keys.to_pylist(), ratings.ratings.tolist()))
    assert set(surv.selection.keys.to_pylist()) <= set(pool.selection.keys.to_pylist())
    assert min(r[k] for k in surv.selection.keys.to_pylist()) >= min(r[k] for k in pool.selection.keys.to_pylist())
