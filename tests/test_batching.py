"""Batches mixed across clusters: exact epochs, more clusters per batch than shuffling, the same on every rank and
disjoint per rank; through DataSelectionCallback and the datamodule."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from helpers import compose

from lightning_alchemist.callbacks import DataSelectionCallback
from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.sampling.mixed import ClusterMixedSampler, cluster_ids, distinct_per_batch, mixed_order
from lightning_alchemist.sampling.samplers import WeightedSubsetSampler
from lightning_alchemist.schema import validate
from lightning_alchemist.selection import Selection
from lightning_alchemist.selection.draw import make_rng


def _zipf_clusters(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``n`` cluster ids over ``k`` clusters with a long tail (sizes ∝ 1/rank), in random order."""
    sizes = 1.0 / np.arange(1, k + 1)
    counts = np.maximum(1, np.floor(sizes / sizes.sum() * n)).astype(int)
    counts[0] += n - counts.sum()
    ids = np.repeat(np.arange(k), counts)
    return np.random.default_rng(seed).permutation(ids)


def test_mixed_order_is_a_permutation_spread_evenly_over_clusters():
    clusters = _zipf_clusters(1000, 20)
    clusters[::50] = -1  # unclustered samples are placed at random
    items = np.arange(1000)
    order = mixed_order(items, clusters, make_rng(0, 0))
    assert np.array_equal(np.sort(order), items)  # each index exactly once
    # a multiset (draw with replacement) keeps its repeats
    drawn = np.array([3, 3, 3, 7, 7, 9])
    assert sorted(mixed_order(drawn, clusters[drawn], make_rng(0, 0)).tolist()) == sorted(drawn.tolist())
    # equal clusters: a round-robin, every window of K holds every cluster
    equal = np.arange(64) % 8
    order = mixed_order(np.arange(64), equal, make_rng(1, 0))
    assert all(len(set(equal[order[i:i + 8]])) == 8 for i in range(0, 64, 8))


@pytest.mark.parametrize("k,batch", [(8, 16), (40, 16), (300, 32)])
def test_mixed_batches_span_more_clusters_than_shuffling(k, batch):
    n = 4800
    clusters = _zipf_clusters(n, k)
    base = WeightedSubsetSampler(np.arange(n), seed=3)
    mixed = ClusterMixedSampler(base, clusters)
    for epoch in range(3):
        mixed.set_epoch(epoch)
        m = distinct_per_batch(np.fromiter(mixed, dtype=np.int64), clusters, batch).mean()
        s = distinct_per_batch(base.order(epoch), clusters, batch).mean()
        assert m > s + 0.5, (k, batch, m, s)
        # the most an epoch allows: a cluster touches at most min(its size, the number of batches) batches
        nb = n // batch
        bound = np.minimum(np.bincount(clusters), nb).sum() / nb
        assert m >= 0.97 * bound, (m, bound)


def test_same_order_on_every_rank_and_disjoint_pieces():
    n, world = 1003, 3
    clusters = np.arange(n) % 4
    for drop_last in (False, True):
        samplers = [ClusterMixedSampler(WeightedSubsetSampler(np.arange(n), seed=9), clusters, world, r, drop_last)
                    for r in range(world)]
        for s in samplers:
            s.set_epoch(2)
        orders = [s.order() for s in samplers]
        assert all(np.array_equal(orders[0], o) for o in orders)
        pieces = [list(s) for s in samplers]
        assert len({len(p) for p in pieces}) == 1 and len(pieces[0]) == len(samplers[0])
        flat = [i for p in pieces for i in p]
        if drop_last:
            assert len(set(flat)) == len(flat) == n // world * world  # disjoint, the remainder cut
        else:
            assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world  # all, padded with the first
            assert len(set(flat)) == n
    # two ranks, four equal clusters: each rank's batches hold all four (every 2nd sample would give a rank two)
    clusters = np.arange(800) % 4
    for r in range(2):
        s = ClusterMixedSampler(WeightedSubsetSampler(np.arange(800), seed=1), clusters, 2, r)
        assert distinct_per_batch(np.fromiter(s, dtype=np.int64), clusters, 8).min() == 4
    # what Lightning's wrapper would do with a plain sampler (every world-th sample): a rank sees 2 of the 4
    strided = ClusterMixedSampler(WeightedSubsetSampler(np.arange(800), seed=1), clusters).order()[0::2]
    assert distinct_per_batch(strided, clusters, 8).max() == 2


def test_orders_are_seeded_per_epoch():
    clusters = _zipf_clusters(500, 10)
    a = ClusterMixedSampler(WeightedSubsetSampler(np.arange(500), seed=4), clusters)
    b = ClusterMixedSampler(WeightedSubsetSampler(np.arange(500), seed=4), clusters)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    c = ClusterMixedSampler(WeightedSubsetSampler(np.arange(500), seed=5), clusters)
    assert list(c) != list(b)


def test_cluster_ids_from_an_array_a_table_or_a_parquet_file(tmp_path):
    keys = [f"k{i}" for i in range(6)]
    assert cluster_ids(keys, [0, 0, 1, 1, 2, 2]).tolist() == [0, 0, 1, 1, 2, 2]
    table = pa.table({"key": ["k5", "k1", "zz"], "cluster": [7, 3, 9], "weight": [1.0, 1.0, 1.0]})
    assert cluster_ids(keys, table).tolist() == [-1, 3, -1, -1, -1, 7]
    pq.write_table(table, tmp_path / "selection.parquet")
    assert cluster_ids(pa.array(keys), str(tmp_path / "selection.parquet")).tolist() == [-1, 3, -1, -1, -1, 7]
    for source, what in [([0, 1], "for a dataset of 6"), (pa.table({"key": ["k1"]}), "no column(s) ['cluster']"),
                         (pa.table({"key": ["x"], "cluster": [1]}), "none of its 1 keys"),
                         (str(tmp_path / "missing.parquet"), "cannot read")]:
        with pytest.raises(DataError, match=None) as err:
            cluster_ids(keys, source)
        assert what in str(err.value) and "\n" not in str(err.value)


class KeyedDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.keys = [f"img{i:04d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        return {"key": self.keys[i], "x": torch.full((3,), float(i))}


def _collate(batch: list) -> dict:
    return {"key": [b["key"] for b in batch], "x": torch.stack([b["x"] for b in batch])}


class Recorder(pl.LightningModule):
    def __init__(self, n: int, batch_size: int = 8) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.dataset = KeyedDataset(n)
        self.batch_size = batch_size
        self.batches: dict[int, list[list[str]]] = {}

    def training_step(self, batch, batch_idx):
        self.batches.setdefault(self.current_epoch, []).append(list(batch["key"]))
        return self.layer(batch["x"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, collate_fn=_collate)


def _fit(cb, model, epochs=2):
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[cb], logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(model)


def test_the_callback_mixes_the_selection_by_the_manifest_cluster_column(tmp_path):
    n = 240
    keys = [f"img{i:04d}" for i in range(n)]
    clusters = {k: i % 6 for i, k in enumerate(keys)}
    chosen = keys[::2]  # 120 selected: the even positions, i.e. clusters 0, 2 and 4
    sel = Selection.from_keys(chosen)
    table = sel.to_table().append_column("cluster", pa.array([clusters[k] for k in chosen], pa.int64()))
    path = tmp_path / "selection.parquet"
    pq.write_table(table, path)
    model = Recorder(n)
    _fit(DataSelectionCallback(str(path), batching="mixed", seed=1), model)
    for epoch in range(2):
        flat = [k for b in model.batches[epoch] for k in b]
        assert sorted(flat) == sorted(chosen)  # the selection, once each
        assert all(len({clusters[k] for k in b}) == 3 for b in model.batches[epoch])  # every batch: all its clusters
    assert model.batches[0] != model.batches[1]
    # the same with ids given as an array per dataset position
    model2 = Recorder(n)
    _fit(DataSelectionCallback(sel, batching="mixed", seed=1, clusters=np.arange(n) % 6), model2)
    assert all(len({clusters[k] for k in b}) == 3 for b in model2.batches[0])
    with pytest.raises(ConfigError, match="needs cluster ids"):
        _fit(DataSelectionCallback(sel, batching="mixed"), Recorder(n), epochs=1)
    with pytest.raises(ConfigError, match="batching must be one of"):
        DataSelectionCallback(sel, batching="sorted")


def test_the_datamodule_mixes_the_pool_by_data_clusters(small_shapes_cfg, tmp_path):
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule({**small_shapes_cfg, "batching": "mixed"}, seed=0)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="data.clusters"):
        dm.train_dataloader()
    ids = {k: i % 5 for i, k in enumerate(dm.pool.keys)}
    pq.write_table(pa.table({"key": list(ids), "cluster": list(ids.values())}), tmp_path / "clusters.parquet")
    dm.clusters = str(tmp_path / "clusters.parquet")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ClusterMixedSampler)
    batches = [b["key"] for b in loader]
    assert all(len({ids[k] for k in b}) == 5 for b in batches)
    assert len({k for b in batches for k in b}) == sum(len(b) for b in batches)


def test_batching_config_composes_and_fails_in_one_line(tmp_path):
    cfg = compose("config", ["data.batching=mixed", f"data.clusters={tmp_path}/c.parquet"])
    with pytest.raises(DataError, match="data.clusters"):
        validate(cfg)
    pq.write_table(pa.table({"key": ["a"], "cluster": [0]}), tmp_path / "c.parquet")
    v = validate(cfg, check_paths=False)
    assert v.data.batching == "mixed"
    for override, key in [("data.batching=sorted", "data.batching")]:
        with pytest.raises(ConfigError, match=key):
            compose("config", [override], check=validate)
    with pytest.raises(ConfigError, match="needs cluster ids"):
        compose("config", ["data.batching=mixed"], check=lambda c: validate(c, check_paths=False))
    # a curation plan writes each kept sample's cluster into the selection manifest
    assert validate(compose("config", ["data.batching=mixed", "curation=dbp"]), check_paths=False).data.batching == "mixed"
    with pytest.raises(ConfigError, match="data.style=map"):
        compose("config", ["data.batching=mixed", "data.style=iterable"], check=lambda c: validate(c, check_paths=False))
