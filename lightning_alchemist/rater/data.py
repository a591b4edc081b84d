"""``RaterDataModule``: the paired pool/validation loaders of rater training over a ``T2IDataModule``."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from torch.utils.data import DataLoader, DistributedSampler

from lightning_alchemist.rater.loader import PairedLoader

__all__ = ["RaterDataModule"]


class RaterDataModule(pl.LightningDataModule):
    """Wraps a ``T2IDataModule``: ``train_dataloader`` is a :class:`PairedLoader` (one validation
    pass per epoch, the pool cycling), each side shuffled and split across ranks.

    Because a ``PairedLoader`` is not a ``DataLoader``, Lightning adds no distributed sampler: this
    module does (map style: a seeded ``DistributedSampler`` per side; iterable style: the data
    module's rank-aware stream for the pool).
    """

    def __init__(self, data: Any, seed: int = 0) -> None:
        super().__init__()
        self.data = data
        self.seed = seed

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        self.data.trainer = self.trainer  # the inner module reads world size and rank from it
        self.data.setup(stage)

    def _world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.world_size, self.trainer.global_rank
        return 1, 0

    def _shuffled(self, dataset: Any, seed: int) -> DataLoader:
        from lightning_alchemist.data.sample import collate_samples

        world, rank = self._world()
        cfg = self.data.cfg
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        # the feature cache, when a stage installed it, serves the same indices (same batches) without decoding
        dataset, collate = self.data.serve(dataset) if hasattr(self.data, "serve") else (dataset, collate_samples)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            persistent_workers=cfg.num_workers > 0,
        )

    def train_dataloader(self) -> PairedLoader:
        self.data.trainer = self.trainer
        if getattr(self.data.cfg, "style", "map") == "map":
            pool = self._shuffled(self.data.pool, self.seed)
        else:
            pool = self.data.train_dataloader()
        return PairedLoader(pool, self._shuffled(self.data.val, self.seed + 1))

    def first_val_batch(self) -> Any:
        """One validation batch (to read the proxy's rater-input sizes before training)."""
        from lightning_alchemist.data.sample import collate_samples

        self.data.setup("fit")
        val = self.data.val
        n = min(len(val), 2)
        return collate_samples([val[i] for i in range(n)])
