"""``T2IDataModule``: pool, validation and scoring loaders over webdataset shards."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler

from lightning_alchemist.config import DataConfig, data_config
from lightning_alchemist.data.decode import SampleDecoder
from lightning_alchemist.data.mapstyle import ShardDataset, ShardInfo
from lightning_alchemist.data.predict_sampler import BatchedView, InOrder, ShardPartitionSampler, shard_batches
from lightning_alchemist.data.sample import collate_samples
from lightning_alchemist.data.sources import DataSource, resolve_source
from lightning_alchemist.data.stream import make_stream
from lightning_alchemist.data.transforms import CenterCropResize

log = logging.getLogger(__name__)


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a DataLoader worker from the seed torch gave it.

    torch seeds each worker from the loader's generator (``base_seed + worker_id``); without this,
    forked workers share the parent's numpy/random state and spawned ones start unseeded.
    """
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class EpochShuffleSampler(RandomSampler):
    """A shuffle whose order is a function of ``(seed, epoch)`` alone, so a resumed run reads the same order.

    ``RandomSampler`` draws each epoch's order from one generator, so a run restarted from a checkpoint
    would read epoch 0's order again. Being a ``RandomSampler``, Lightning still swaps it for its seeded
    ``DistributedSampler`` under DDP. :meth:`skip_once` starts an epoch part-way (resuming mid-epoch).
    """

    def __init__(self, data_source: Any, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0
        self._skip: Optional[tuple[int, int]] = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_once(self, epoch: int, num: int) -> None:
        """Start ``epoch``'s next pass at position ``num``; ``len`` is unchanged (Lightning counts the done batches)."""
        self._skip = (int(epoch), int(num))

    def __iter__(self) -> Any:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.data_source), generator=gen).tolist()
        if self._skip is not None and self._skip[0] == self.epoch:
            order, self._skip = order[self._skip[1]:], None
        return iter(order)


class T2IDataModule(L.LightningDataModule):
    """Image–caption data for rating, scoring and training.

    - **pool** (``train_dataloader``): the samples to be rated, selected and trained on;
    - **validation** (``val_dataloader``): the held-out split (clean for ``shapes``), used by the
      rater's upper level and for evaluation;
    - **predict** (``predict_dataloader``): every pool sample exactly once across all ranks, whole
      shards per rank, skipping the shards in :attr:`skip_shards` (resumable scoring).

    Args:
        cfg: the validated ``data`` config (or a dict/DictConfig with its keys).
        seed: seeds the held-out split, shard and sample shuffles, and the loader workers.
        duplicates: overrides ``data.duplicates``; a key held by several shards: ``"skip"`` its later copies (counted, one
            warning naming the shards) or ``"error"`` (see :class:`ShardDataset`).
    """

    def __init__(self, cfg: Any = None, seed: int = 0, duplicates: Optional[str] = None) -> None:
        super().__init__()
        self.cfg: DataConfig = data_config(cfg)
        self.seed = seed
        self.duplicates = str(duplicates if duplicates is not None else self.cfg.duplicates)
        self.skip_shards: set[str] = set()
        #: Serves map-style splits another way: ``view(dataset) -> (dataset, collate_fn)`` (the feature
        #: cache installs one, :func:`lightning_alchemist.features.use_features`); None: decoded images.
        self.view: Optional[Callable[[Any], tuple[Any, Callable]]] = None
        self._source: Optional[DataSource] = None
        self._pool: Optional[ShardDataset] = None
        self._val: Optional[ShardDataset] = None
        # Caption variants chosen per training batch (``use_captions``); None: the shards' captions.
        self.captions: Optional[Callable[[dict[str, Any], int], dict[str, Any]]] = None
        # Cluster ids for data.batching=mixed: ids per pool position, or a Parquet file / table of key, cluster.
        self.clusters: Any = self.cfg.clusters
        self._restored: Optional[dict[str, int]] = None

    # ------------------------------------------------------------------ lifecycle

    def state_dict(self) -> dict[str, Any]:
        """Where the training pass stands (saved in checkpoints): the epoch and the batches done in it."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        ready = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        total = trainer.num_training_batches
        done = ready if isinstance(total, int) and 0 < ready < total else 0
        return {"epoch": int(trainer.current_epoch), "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the shuffled pass where a checkpoint left it (map style, without a selection callback)."""
        self._restored = dict(state_dict) if state_dict else None

    def prepare_data(self) -> None:
        """Materialise the data and build shard indices (once, on one process per node)."""
        source = resolve_source(self.cfg, self.seed)
        self._build(source)

    def setup(self, stage: Optional[str] = None) -> None:
        if self._pool is None:
            self._build(resolve_source(self.cfg, self.seed))

    def _build(self, source: DataSource) -> None:
        self._source = source
        dup = self.duplicates
        self._pool = ShardDataset(source.pool_urls, self._decoder(), key_filter=source.split.is_pool, duplicates=dup)
        if source.val_urls:
            self._val = ShardDataset(source.val_urls, self._decoder(), duplicates=dup)
        else:
            self._val = ShardDataset(source.pool_urls, self._decoder(), key_filter=source.split.is_val, duplicates=dup)
        if len(self._pool) == 0:
            from lightning_alchemist.errors import DataError

            raise DataError(f"data '{self.cfg.name}': the pool is empty ({len(source.pool_urls)} shards, no usable samples)")
        if source.val_urls:
            # a key in both splits leaks validation data into the pool the rater learns to rank
            both = set(self._val.keys).intersection(self._pool.keys)
            if both:
                log.warning("data '%s': %d keys are in both data.urls and data.val_urls (e.g. '%s'); "
                            "the validation split should be disjoint from the pool", self.cfg.name, len(both), min(both))
        for name, ds in (("pool", self._pool), ("validation", self._val)):
            if ds.index_stats.total:
                log.warning("%s: %s", name, ds.index_stats.summary())

    def _decoder(self) -> SampleDecoder:
        return SampleDecoder(CenterCropResize(self.cfg.image_size))

    # ------------------------------------------------------------------ datasets

    @property
    def source(self) -> DataSource:
        self.setup()
        assert self._source is not None
        return self._source

    @property
    def pool(self) -> ShardDataset:
        """The pool as a map-style dataset (``keys`` addresses samples)."""
        self.setup()
        assert self._pool is not None
        return self._pool

    @property
    def val(self) -> ShardDataset:
        """The validation split as a map-style dataset."""
        self.setup()
        assert self._val is not None
        return self._val

    @property
    def labels_path(self) -> Optional[Path]:
        """``labels.parquet`` (key, defect) when the dataset has one; for evaluation only."""
        return self.source.labels_path

    def pool_shards(self) -> list[ShardInfo]:
        """The pool's shards with their pool-sample counts."""
        return list(self.pool.shards)

    # ------------------------------------------------------------------ caption variants

    def use_captions(self, chooser: Optional[Callable[[dict[str, Any], int], dict[str, Any]]]) -> None:
        """Replace each training batch's captions by ``chooser(batch, epoch)`` (e.g. a
        :class:`~lightning_alchemist.curation.captions.CaptionChooser`); ``None`` restores the shards' captions.

        Applied in :meth:`on_before_batch_transfer`, in the training process (not in loader workers), so the
        choice sees the trainer's epoch; validation, scoring and prediction batches keep their captions.
        """
        self.captions = chooser

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if self.captions is not None and trainer is not None and trainer.training and isinstance(batch, dict):
            batch = self.captions(batch, int(trainer.current_epoch))
        return batch

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: Any, **kwargs: Any) -> DataLoader:
        # Seeded workers: the worker seeds come from this generator, so a rerun with the same seed
        # (and worker count) reads the same data in the same order.
        kwargs.setdefault("generator", torch.Generator().manual_seed(self.seed))
        dataset, collate = self.serve(dataset)
        return DataLoader(
            dataset,
            batch_size=kwargs.pop("batch_size", self.cfg.batch_size),
            num_workers=self.cfg.num_workers,
            collate_fn=kwargs.pop("collate_fn", collate),
            persistent_workers=self.cfg.num_workers > 0,
            worker_init_fn=seed_worker if self.cfg.num_workers > 0 else None,
            **kwargs,
        )

    def serve(self, dataset: Any) -> tuple[Any, Callable]:
        """``(dataset, collate_fn)`` a loader over a map-style split uses: through :attr:`view` when one is set."""
        if self.view is not None and isinstance(dataset, ShardDataset):
            return self.view(dataset)
        return dataset, collate_samples

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return 1, 0

    def train_dataloader(self) -> DataLoader:
        """Shuffled pool batches. Map style: Lightning adds a ``DistributedSampler`` under DDP.

        Iterable style: each rank and worker cycles over its own shards (disjoint across ranks)
        with an equal per-rank epoch length, so DDP ranks step equally.
        """
        if self.cfg.style == "map":
            if self.cfg.batching == "mixed":
                # (its order is a function of (seed, epoch); a resumed run restarts the interrupted epoch's order)
                return self._loader(self.pool, sampler=self.mixed_sampler(), shuffle=False, drop_last=True)
            sampler = EpochShuffleSampler(self.pool, seed=self.seed)
            restored, self._restored = self._restored or {}, None
            if restored.get("batches_done"):
                sampler.skip_once(int(restored["epoch"]), int(restored["batches_done"]) * self.cfg.batch_size)
            return self._loader(self.pool, sampler=sampler, drop_last=True)
        world, _ = self._world()
        workers = max(self.cfg.num_workers, 1)
        shards = len(self.source.pool_urls)
        if shards < world * workers:
            from lightning_alchemist.errors import DataError

            raise DataError(
                f"data '{self.cfg.name}': the iterable style needs at least one shard per rank and worker "
                f"({world} ranks x {workers} workers > {shards} shards); use data.style=map or fewer data.num_workers"
            )
        per_worker = math.ceil(len(self.pool) / world / workers)
        stream = self.train_stream(cycle=True).with_epoch(per_worker)
        return self._loader(stream)

    def mixed_sampler(self, clusters: Any = None) -> Any:
        """A :class:`~lightning_alchemist.sampling.mixed.ClusterMixedSampler` over the whole pool for this rank.

        ``clusters``: ids per pool position, or a Parquet file / table of ``key, cluster``; default :attr:`clusters`
        (``data.clusters``, or what the pipeline set, e.g. a selection manifest with a ``cluster`` column).
        """
        import numpy as np

        from lightning_alchemist.sampling.mixed import ClusterMixedSampler, cluster_ids
        from lightning_alchemist.sampling.samplers import WeightedSubsetSampler

        source = clusters if clusters is not None else self.clusters
        if source is None:
            from lightning_alchemist.errors import ConfigError

            raise ConfigError("config 'data.batching': 'mixed' needs cluster ids: pass data.clusters=FILE.parquet "
                              "(columns key, cluster), or train on a selection manifest with a 'cluster' column")
        world, rank = self._world()
        base = WeightedSubsetSampler(np.arange(len(self.pool)), seed=self.seed)
        return ClusterMixedSampler(base, cluster_ids(self.pool.keys, source), num_replicas=world, rank=rank, drop_last=True)

    def train_stream(self, cycle: bool = False, shuffle: bool = True) -> Any:
        """The pool as a webdataset pipeline (the streaming style), e.g. for a custom loader."""
        return make_stream(
            self.source.pool_urls,
            self._decoder(),
            key_filter=self.source.split.is_pool,
            shuffle=shuffle,
            seed=self.seed,
            shuffle_buffer=self.cfg.shuffle_buffer,
            cycle=cycle,
            exclude=self.pool.skipped_duplicates,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Every pool sample once across ranks (whole shards per rank, batches within a shard), minus :attr:`skip_shards`."""
        world, rank = self._world()
        sampler = ShardPartitionSampler(self.pool, skip_stems=sorted(self.skip_shards), num_replicas=world, rank=rank)
        # batches within one shard: a sample's batch mates do not depend on which shards are skipped or on the rank count
        dataset, collate = self.serve(self.pool)
        batches = BatchedView(dataset, shard_batches(sampler, self.cfg.batch_size), collate)
        return self._loader(batches, batch_size=None, sampler=InOrder(len(batches)), collate_fn=_as_is)


def _as_is(batch: Any) -> Any:
    """The loader's "collate" for items that are whole batches already (:class:`BatchedView`)."""
    return batch


def build_datamodule(cfg: Any, seed: int = 0, **kwargs: Any) -> T2IDataModule:
    """A :class:`T2IDataModule` from the ``data`` config node (validated, one-line errors); ``kwargs`` go to it."""
    return T2IDataModule(cfg, seed=seed, **kwargs)
