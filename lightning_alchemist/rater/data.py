"""``RaterDataModule``: the paired pool/validation loaders of rater training over a ``T2IDataModule``."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
import torch
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
        self._loader: Optional[PairedLoader] = None
        self._restored: Optional[dict[str, int]] = None

    def state_dict(self) -> dict[str, Any]:
        """Where the paired loader stands (saved in checkpoints), so a resumed run reads the same batches."""
        trainer = getattr(self, "trainer", None)
        if self._loader is None or trainer is None:
            return {}
        ready = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        total = trainer.num_training_batches
        done = ready if isinstance(total, int) and 0 < ready < total else 0
        return self._loader.state_at(done)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict) if state_dict else None

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
            # its own generator for worker seeds: a loader without one draws them from the global RNG at every pass
            generator=torch.Generator().manual_seed(seed),
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
        self._loader = PairedLoader(pool, self._shuffled(self.data.val, self.seed + 1))
        if self._restored:
            self._loader.restore(self._restored)
            self._restored = None
        return self._loader

    def first_val_batch(self) -> Any:
        """One validation batch (to read the proxy's rater-input sizes before training)."""
        from lightning_alchemist.data.sample import collate_samples

        self.data.setup("fit")
        val = self.data.val
        n = min(len(val), 2)
        return collate_samples([val[i] for i in range(n)])
