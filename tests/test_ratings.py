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
