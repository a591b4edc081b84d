"""Ratings I/O: the scorer's Parquet contract, checks and fingerprints."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lightning_alchemist.errors import DataError
from lightning_alchemist.selection.ratings import FINGERPRINT_KEY, Ratings


def _write_shard(path, keys, ratings, fingerprint="cfg1", extra=True):
    cols = {"key": pa.array(keys, pa.string()), "rating": pa.array(ratings, pa.float32())}
    if extra:
        cols["rating_batch"] = pa.array(np.zeros(len(keys)), pa.float32())
    table = pa.table(cols).replace_schema_metadata({FINGERPRINT_KEY: fingerprint.encode()})
    pq.write_table(table, path)


def test_read_folder_of_shards(tmp_path):
    d = tmp_path / "ratings"
    d.mkdir()
    _write_shard(d / "shard-000001.parquet", ["c", "d"], [0.5, -1.0])
    _write_shard(d / "shard-000000.parquet", ["a", "b"], [1.0, 2.0])
    (d / "shard-000002.parquet.tmp").write_bytes(b"half written")  # ignored
    r = Ratings.read(d)
    assert len(r) == 4
    assert r.keys.to_pylist() == ["a", "b", "c", "d"]  # files in name order
    assert r.ratings.dtype == np.float64 and r.ratings.tolist() == [1.0, 2.0, 0.5, -1.0]
    assert r.scoring_fingerprints == ["cfg1"]
    # the same content gives the same fingerprint, however it was chunked or stored
    same = Ratings.from_arrays(["a", "b", "c", "d"], [1.0, 2.0, 0.5, -1.0])
    assert same.fingerprint == r.fingerprint
    assert Ratings.from_arrays(["a", "b", "c", "d"], [1.0, 2.0, 0.5, -2.0]).fingerprint != r.fingerprint
    assert Ratings.from_arrays(["ab", "", "c", "d"], [1.0, 2.0, 0.5, -1.0]).fingerprint != r.fingerprint
    # single file and list-of-files forms
    assert len(Ratings.read(d / "shard-000000.parquet")) == 2
    assert len(Ratings.read([d / "shard-000000.parquet", d / "shard-000001.parquet"])) == 4


def test_duplicate_keys_refused_with_count_and_example(tmp_path):
    _write_shard(tmp_path / "a.parquet", ["k1", "k2", "k3"], [1, 2, 3])
    _write_shard(tmp_path / "b.parquet", ["k3", "k4"], [1, 2])
    with pytest.raises(DataError, match=r"1 duplicate rows over 1 keys \(e\.g\. 'k3'"):
        Ratings.read(tmp_path)


def test_expected_keys_missing(tmp_path):
    _write_shard(tmp_path / "a.parquet", ["k1", "k2"], [1, 2])
    Ratings.read(tmp_path, expected_keys=["k1"])
    with pytest.raises(DataError, match=r"1 of 3 expected keys are not rated \(e\.g\. 'k9'\)"):
        Ratings.read(tmp_path, expected_keys=["k1", "k2", "k9"])


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Ratings.read(tmp_path / "nope")
    with pytest.raises(DataError, match="no \\*.parquet files"):
        Ratings.read(tmp_path)
    pq.write_table(pa.table({"key": ["a"], "score": [1.0]}), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['rating'\]"):
        Ratings.read(tmp_path)
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read"):
        Ratings.read(tmp_path)
    with pytest.raises(DataError, match="NaN"):
        Ratings.from_arrays(["a", "b"], [1.0, float("nan")])


def test_write_roundtrip_is_plain_parquet(tmp_path):
    r = Ratings.from_arrays([f"k{i}" for i in range(10)], np.arange(10.0))
    path = r.write(tmp_path / "ratings", stem="shard-0", fingerprint="abc")
    table = pq.read_table(path)
    assert table.column_names == ["key", "rating"]
    assert table.schema.metadata[FINGERPRINT_KEY] == b"abc"
    back = Ratings.read(tmp_path / "ratings")
    assert back.fingerprint == r.fingerprint and back.scoring_fingerprints == ["abc"]
    assert not list((tmp_path / "ratings").glob("*.tmp"))


def test_fingerprint_ignores_row_order_and_mixed_shard_schemas(tmp_path):
    keys = [f"k{i}" for i in range(100)] + ["a-much-longer-key-000", "x"]
    values = np.arange(102.0)
    r = Ratings.from_arrays(keys, values)
    perm = np.random.default_rng(0).permutation(102)
    assert Ratings.from_arrays([keys[i] for i in perm], values[perm]).fingerprint == r.fingerprint
    swapped = values.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same values, attached to other keys
    assert Ratings.from_arrays(keys, swapped).fingerprint != r.fingerprint
    pq.write_table(pa.table({"key": keys[:50], "rating": pa.array(values[:50], pa.float64())}), tmp_path / "a.parquet")
    _write_shard(tmp_path / "b.parquet", keys[50:], values[50:], extra=True)  # float32 + extra column
    assert Ratings.read(tmp_path).fingerprint == r.fingerprint


# -- the ShiftGaussian draw: the fast path (bins, bounds, a thin band sorted) equals the full computation --------


def _full_draw(values, k, strategy, seed):
    """The definition, with a full sort: the k largest ``log_weight(rank) - log E`` (E per row in row order), ties by row."""
    from lightning_alchemist.selection.draw import make_rng, rank_order

    n = len(values)
    strategy = strategy.resolved(None)  # the applied n, mu, sigma (no declared ends: the head is dropped)
    head = strategy.head_size(n, k)
    rank = np.empty(n, dtype=np.int64)
    rank[rank_order(values)] = np.arange(n)
    log_e = np.log(make_rng(seed).standard_exponential(n))
    keys = np.full(n, -np.inf)
    keys[rank >= head] = strategy.log_weight_of_rank(rank[rank >= head].astype(np.float64), n)
    keys -= log_e
    mask = np.zeros(n, dtype=bool)
    mask[np.lexsort((np.arange(n), -keys))[:k]] = True
    return mask


def _shift_gauss_values():
    rng = np.random.default_rng(1)
    return {
        "normal": rng.standard_normal(20_000),
        "ties": np.round(rng.standard_normal(20_000), 1),  # large runs of equal ratings
        "constant": np.ones(3000),
        "infinite": np.r_[rng.standard_normal(4000), [np.inf, -np.inf, np.inf, -0.0, 0.0]],
        "outlier": np.r_[rng.random(20_000), [1e12]],  # nearly every row in one bin
        "sorted": np.sort(rng.standard_normal(30_000)),  # file order = rank order
    }


@pytest.mark.parametrize("name", sorted(_shift_gauss_values()))
def test_shift_gaussian_draw_equals_the_full_sort_definition(name, monkeypatch):
    from lightning_alchemist.selection import Gsample, Ratings, ShiftGaussian
    from lightning_alchemist.selection import draw

    values = _shift_gauss_values()[name]
    n = len(values)
    ratings = Ratings.from_arrays([f"k{i}" for i in range(n)], values, check=False)
    strategies = (ShiftGaussian(), Gsample(), ShiftGaussian(0.1, 0.7, 0.01), ShiftGaussian(0.3, 0.1, 0.5),
                  ShiftGaussian(head="keep"))
    for strategy in strategies:
        for keep in (0.01, 0.5, 0.8, 1.0):
            k = round(keep * n)
            expected = _full_draw(values, k, strategy, seed=5)
            sel = strategy.select(ratings, keep, seed=5)
            assert (sel.indices == np.flatnonzero(expected)).all(), (strategy, keep)
    # thresholds from a sample (as at 30M), and a sample that misleads them (the exact fallback)
    for sample, margin in ((1000, 6.0), (1000, -40.0)):
        monkeypatch.setattr(draw, "_SAMPLE", sample)
        monkeypatch.setattr(draw, "_MARGIN_SD", margin)
        monkeypatch.setattr(draw, "_CHUNK", 4096)  # many chunks
        for seed in (0, 1):
            sel = ShiftGaussian().select(ratings, 0.5, seed=seed)
            assert (sel.indices == np.flatnonzero(_full_draw(values, round(0.5 * n), ShiftGaussian(), seed))).all()


def test_shift_gaussian_peak_rank_is_where_weights_turn():
    from lightning_alchemist.selection import ShiftGaussian

    for n, mu in ((10, 0.6), (1000, 0.6), (3_000_001, 0.6), (7, 0.0), (7, 1.0), (999, 1 / 3)):
        s = ShiftGaussian(n=0.0, mu=mu, sigma=0.2)
        split = s.peak_rank(n)
        d = np.arange(n, dtype=np.float64) * (1.0 / n) - mu
        assert (d[:split] < 0).all() and (d[split:] >= 0).all()
        w = s.log_weight_of_rank(np.arange(n, dtype=np.float64), n)
        assert (np.diff(w[:split]) >= 0).all() and (np.diff(w[split:]) <= 0).all()
