"""``DataSelectionCallback``: train on a selection without touching the user's module or data code.

Attach it to any ``Trainer``. When Lightning requests the train dataloader, the callback

* map-style dataset: finds each sample's key (``dataset.keys`` or ``key_fn``), builds a
  :class:`~lightning_alchemist.sampling.WeightedSubsetSampler` over the selected positions
  (sharded per rank under DDP) and re-instantiates the user's ``DataLoader`` around it with
  Lightning's own machinery, so batch size, workers and collate stay as the user set them;
* webdataset pipeline: inserts a :class:`~lightning_alchemist.sampling.KeyFilter` right after
  samples are formed (before decoding) and sets the epoch length (``with_epoch``) so every rank
  and worker yields the same number of items.

It logs the effective keep ratio and how many selected keys the dataset holds (under
``warn_below`` of the selection found: a warning; under ``error_below``: a ``DataError``), and
stores ``(epoch, selection fingerprint)`` in checkpoints, refusing to resume with another selection.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset

from lightning_alchemist.errors import ConfigError, DataError
from lightning_alchemist.sampling.mixed import BATCHING, ClusterMixedSampler, cluster_ids
from lightning_alchemist.sampling.samplers import DistributedWeightedSubsetSampler, WeightedSubsetSampler
from lightning_alchemist.sampling.webdataset import (
    KeyFilter,
    batch_size_of,
    find_insert_position,
    per_worker_epoch,
    scan_tar_keys,
    shard_urls,
    stream_key_filters,
)
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import UNRATED_TOLERANCE, Ratings, check_ratings_cover
from lightning_alchemist.selection.strategies import Strategy

__all__ = ["DataSelectionCallback"]

KeyFn = Callable[[Any, int], str]


def dataset_keys(dataset: Any, key_fn: Optional[KeyFn] = None) -> pa.Array:
    """The key of every sample of a map-style dataset, from ``key_fn(dataset, i)`` or ``dataset.keys``."""
    if key_fn is not None:
        keys: Any = [key_fn(dataset, i) for i in range(len(dataset))]
    else:
        keys = getattr(dataset, "keys", None)
        if callable(keys):
            keys = keys()
        if keys is None:
            raise ConfigError(
                f"DataSelectionCallback: dataset {type(dataset).__name__} has no 'keys' attribute: "
                "give it `keys` (one string per index) or pass key_fn=lambda dataset, i: <key of sample i>"
            )
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    arr = keys if isinstance(keys, pa.Array) else pa.array(list(keys) if not isinstance(keys, np.ndarray) else keys, type=pa.string())
    if len(arr) != len(dataset):
        raise DataError(f"DataSelectionCallback: dataset has {len(dataset)} samples but {len(arr)} keys")
    return arr


class DataSelectionCallback(Callback):
    """Make the training dataloader see only (``subset``) or mostly (``weighted``) the selected samples.

    Args:
        selection: a :class:`Selection`, a path to ``selection.parquet``, or a :class:`Ratings`
            table (then ``strategy`` and ``keep`` choose the selection when training starts).
        mode: ``"subset"``: each epoch a fresh shuffle of exactly the selected samples;
            ``"weighted"``: each epoch ``num_samples`` draws ∝ weight (curricula always use it).
        key_fn: ``key_fn(dataset, index) -> key`` for map-style datasets without ``keys``.
        strategy, keep: used only when ``selection`` is a :class:`Ratings` table.
        seed: the epoch orders are a function of ``(seed, epoch)``, identical on every rank.
        num_samples: draws per epoch in ``weighted`` mode (default: the manifest's draw count, else
            the selected samples found with positive weight).
        replacement: draw with replacement in ``weighted`` mode (map-style only). ``None``: draws
            are ∝ weight for any manifest: with replacement, except for soft selections and
            curricula (their manifest sets the distinct samples per epoch: drawn without
            replacement, the method's rule) and equal weights (each sample once). A stream keeps
            each key with probability ∝ weight per pass (weight / max weight without a draw count).
        warn_below, error_below: share of the selection found in the dataset under which to warn / fail.
        batching: ``"shuffle"`` (each epoch's order as the mode draws it) or ``"mixed"``: the same samples, reordered
            so that each batch spans as many clusters as possible (:class:`~lightning_alchemist.sampling.mixed.ClusterMixedSampler`;
            map-style datasets only).
        clusters: for ``batching="mixed"``: cluster ids per dataset position, or a table / Parquet file of ``key,
            cluster``; ``None``: the ``cluster`` column of the selection manifest file.
        epoch_length: for a stream, the selected samples per epoch (all ranks together); sets
            ``with_epoch`` and skips scanning the shards' tar headers for their keys (which is
            how the callback otherwise counts the matches and sizes the epoch).
        allow_partial_ratings: accept a selection drawn from ratings that cover only part of the
            dataset (warn with the effective keep). Otherwise that is a ``DataError``: the ratings
            must cover every shard (``Ratings`` input, checked per shard) or, for a manifest, its
            ``num_rated`` must reach the dataset's size (less 1% for undecodable images).
    """

    def __init__(
        self,
        selection: Union[Selection, Ratings, str, os.PathLike],
        mode: str = "subset",
        key_fn: Optional[KeyFn] = None,
        strategy: Optional[Strategy] = None,
        keep: Optional[float] = None,
        seed: int = 0,
        num_samples: Optional[int] = None,
        replacement: Optional[bool] = None,
        warn_below: float = 0.99,
        error_below: float = 0.01,
        epoch_length: Optional[int] = None,
        allow_partial_ratings: bool = False,
        batching: str = "shuffle",
        clusters: Any = None,
    ) -> None:
        if mode not in ("subset", "weighted"):
            raise ConfigError(f"DataSelectionCallback: mode must be 'subset' or 'weighted', got {mode!r}")
        if str(batching) not in BATCHING:
            raise ConfigError(f"DataSelectionCallback: batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        if isinstance(selection, Ratings) and (strategy is None or keep is None):
            raise ConfigError("DataSelectionCallback: given Ratings, also pass strategy=... and keep=... to select from them")
        self._source = selection
        self.mode = mode
        self.key_fn = key_fn
        self.strategy = strategy
        self.keep = keep
        self.seed = int(seed)
        self.num_samples = num_samples
        self.replacement = replacement
        self.warn_below = warn_below
        self.error_below = error_below
        self.epoch_length = epoch_length
        self.allow_partial_ratings = allow_partial_ratings
        self.batching = str(batching)
        self.clusters = clusters
        self.selection: Optional[Selection] = selection if isinstance(selection, Selection) else None
        self.stats: dict[str, Any] = {}
        self.epoch = 0
        self._restored: Optional[dict[str, Any]] = None
        self._samplers: list[WeightedSubsetSampler] = []
        self._filters: list[KeyFilter] = []
        self._patched: Optional[tuple[Any, Any]] = None
        self._trainer: Optional["pl.Trainer"] = None

    # -- selection -------------------------------------------------------------------------------------------------
    def resolve(self) -> Selection:
        """Load or compute the selection (once)."""
        if self.selection is None:
            src = self._source
            if isinstance(src, Ratings):
                assert self.strategy is not None and self.keep is not None
                self.selection = self.strategy.select(src, self.keep, self.seed)
            elif isinstance(src, (str, os.PathLike)):
                self.selection = Selection.read(Path(src))
            else:
                raise ConfigError(
                    f"DataSelectionCallback: selection must be a Selection, a path or Ratings, got {type(src).__name__}"
                )
        return self.selection

    # -- hooks -----------------------------------------------------------------------------------------------------
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        """Resolve the selection and hook the train dataloader request (``fit`` only)."""
        if stage != "fit":
            return
        self._trainer = trainer
        self.resolve()
        source = getattr(trainer.fit_loop, "_data_source", None)
        if source is None or not hasattr(source, "dataloader"):
            raise RuntimeError("DataSelectionCallback: this Lightning version has no fit_loop._data_source; please report")
        if self._patched is not None:
            return
        original = source.dataloader

        def selected_dataloader() -> Any:
            return self._apply_all(trainer, original())

        # An instance attribute shadows the method: Lightning still calls it inside its own
        # argument-capturing context, so the user's DataLoader can be re-instantiated.
        source.dataloader = selected_dataloader
        self._patched = (source, original)

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if self._patched is not None:
            source, _ = self._patched
            source.__dict__.pop("dataloader", None)
            self._patched = None

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Advance the stream filters' epoch (samplers get ``set_epoch`` from Lightning) and log the ratios."""
        self.epoch = trainer.current_epoch
        for f in self._filters:
            f.set_epoch(self.epoch)
        for name in ("keep_ratio", "found_ratio"):
            if name in self.stats:
                pl_module.log(f"selection/{name}", float(self.stats[name]), on_step=False, on_epoch=True, sync_dist=True)

    def _batches_done(self) -> int:
        """Batches this rank finished in the current epoch, when a checkpoint is taken mid-epoch (else 0)."""
        trainer = self._trainer
        if trainer is None or not self._samplers:
            return 0
        ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        total = trainer.num_training_batches
        return int(ready) if 0 < ready < total else 0

    def state_dict(self) -> dict[str, Any]:
        sel = self.selection
        return {
            "epoch": self.epoch,
            "batches_done": self._batches_done(),
            "seed": self.seed,
            "mode": self.mode,
            "selection_fingerprint": sel.fingerprint if sel is not None else None,
            "num_selected": len(sel) if sel is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the epoch; refuse a checkpoint made with another selection or seed."""
        self._restored = dict(state_dict)
        self.epoch = int(state_dict.get("epoch", 0))
        fp = state_dict.get("selection_fingerprint")
        sel = self.resolve()
        if fp is not None and fp != sel.fingerprint:
            raise DataError(
                f"DataSelectionCallback: the checkpoint was trained on selection {fp} but this run has "
                f"{sel.fingerprint} ({len(sel)} keys); pass the same selection to resume, or start a new run"
            )
        if int(state_dict.get("seed", self.seed)) != self.seed:
            raise DataError(
                f"DataSelectionCallback: the checkpoint used seed={state_dict['seed']} but this run has seed={self.seed}; "
                "pass the same seed to resume the same epoch orders"
            )

    # -- dataloader rewriting --------------------------------------------------------------------------------------
    def _apply_all(self, trainer: "pl.Trainer", loaders: Any) -> Any:
        from lightning.pytorch.utilities import CombinedLoader
        from lightning_utilities.core.apply_func import apply_to_collection

        if isinstance(loaders, CombinedLoader):
            loaders.flattened = [self._apply(trainer, dl) for dl in loaders.flattened]
            return loaders
        return apply_to_collection(loaders, DataLoader, lambda dl: self._apply(trainer, dl))

    def _apply(self, trainer: "pl.Trainer", dl: DataLoader) -> DataLoader:
        if isinstance(dl.dataset, IterableDataset):
            self._apply_stream(trainer, dl)
            return dl
        return self._apply_map(trainer, dl)

    def _check_match(self, found: int, dataset_size: int, what: str) -> None:
        sel = self.resolve()
        share = found / max(len(sel), 1)
        msg = (
            f"DataSelectionCallback: {found} of {len(sel)} selected keys ({share:.1%}) were found in the "
            f"{what} of {dataset_size} samples"
        )
        if share < self.error_below:
            raise DataError(f"{msg}: the selection does not belong to this dataset; select from ratings of this dataset")
        if share < self.warn_below:
            rank_zero_warn(f"{msg}; the rest are skipped (was the dataset filtered or re-sharded after scoring?)")

    def _check_rated(self, keys: Any, dataset: Any = None) -> None:
        """Refuse a selection drawn from ratings that miss part of the dataset (unless ``allow_partial_ratings``).

        ``Ratings`` input: checked per shard (``dataset.keys_by_shard()`` when it has one). A manifest
        only records how many samples were rated (``num_rated``); the shards holding none of the
        selected keys are named as the likely unrated ones.
        """
        sel = self.resolve()
        if isinstance(self._source, Ratings):
            by_shard = dataset.keys_by_shard() if hasattr(dataset, "keys_by_shard") else {"dataset": keys}
            try:
                check_ratings_cover(self._source, by_shard, self.allow_partial_ratings, keep=self.keep)
            except DataError as err:
                raise DataError(f"DataSelectionCallback: {err}") from None
            return
        num_rated, size = sel.meta.get("num_rated"), len(keys)
        if num_rated is None or num_rated >= (1 - UNRATED_TOLERANCE) * size:
            return
        keep = sel.meta.get("keep")
        effective = len(sel) / max(size, 1) if sel.samples_per_epoch() is None else sel.samples_per_epoch() / max(size, 1)
        msg = (
            f"DataSelectionCallback: the selection was drawn from ratings of {num_rated} samples but the dataset holds "
            f"{size} ({num_rated / max(size, 1):.1%} rated): training keeps {effective:.3f} of it instead of keep={keep}"
        )
        if hasattr(dataset, "keys_by_shard"):
            chosen = sel.keys.combine_chunks()
            empty = [stem for stem, ks in dataset.keys_by_shard().items()
                     if ks and not pc.any(pc.is_in(pa.array(ks, pa.string()), value_set=chosen)).as_py()]
            if empty:
                more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
                msg += f"; {len(empty)} shards hold no selected key, likely unrated ({', '.join(empty[:3])}{more})"
        if self.allow_partial_ratings:
            rank_zero_warn(msg + " (allow_partial_ratings)")
            return
        raise DataError(
            msg + "; finish scoring (rerun recipes/score.py with the same out=: it resumes, rated shards are skipped) "
            "and select again, or pass allow_partial_ratings=True"
        )

    def _effective_mode(self) -> str:
        if self.resolve().schedule and self.mode != "weighted":
            rank_zero_info("DataSelectionCallback: the selection has a per-epoch schedule; using mode='weighted'")
            return "weighted"
        return self.mode

    def _replacement(self, mode: str, sel: Selection, weights: np.ndarray, num_samples: Optional[int], positive: int) -> bool:
        """Whether weighted draws are made with replacement (the rule under ``replacement=None``).

        Draws are ∝ weight for any manifest: with replacement, unless the manifest sets how many
        distinct samples an epoch draws (soft selections, curricula: the method's draw without
        replacement) or every positive weight is equal and the epoch fits in them (each once).
        """
        if mode != "weighted":
            return False
        pos = weights[weights > 0]
        equal = len(pos) == 0 or bool(np.all(pos == pos[0]))
        if self.replacement is not None:
            if not self.replacement and not equal and not sel.schedule and num_samples is not None and num_samples >= positive:
                rank_zero_warn(
                    f"DataSelectionCallback: replacement=False draws all {positive} weighted samples once per epoch, "
                    "so their weights have no effect; leave replacement unset (draws ∝ weight) or lower num_samples"
                )
            return self.replacement
        if sel.schedule or sel.samples_per_epoch() is not None:
            return False
        return not (equal and (num_samples is None or num_samples <= positive))

    def _apply_map(self, trainer: "pl.Trainer", dl: DataLoader) -> DataLoader:
        from lightning.pytorch.trainer.states import RunningStage
        from lightning.pytorch.utilities.data import _update_dataloader

        sel = self.resolve()
        dataset = dl.dataset
        keys = dataset_keys(dataset, self.key_fn)
        rows = pc.index_in(keys, value_set=sel.keys.combine_chunks() if sel.keys.num_chunks != 1 else sel.keys.chunk(0))
        found_mask = rows.is_valid().to_numpy(zero_copy_only=False)
        positions = np.flatnonzero(found_mask)
        sel_rows = rows.filter(rows.is_valid()).to_numpy().astype(np.int64)
        self._check_match(len(positions), len(dataset), "map-style dataset")
        self._check_rated(keys, dataset)
        mode = self._effective_mode()
        if mode == "subset" and not sel.schedule:
            # a subset is the rows with positive weight (a soft selection also lists weight-0 rows)
            keep_rows = sel.weights[sel_rows] > 0
            positions, sel_rows = positions[keep_rows], sel_rows[keep_rows]
        weights = sel.weights[sel_rows]
        epoch_weights = None
        num_samples = self.num_samples
        if sel.schedule:
            length = sel.schedule.get("epochs") or trainer.max_epochs
            if not length or length < 1:
                raise ConfigError("DataSelectionCallback: the curriculum needs selection.epochs or Trainer(max_epochs=...)")
            epoch_weights = lambda epoch: sel.epoch_weights(epoch, length)[sel_rows]  # noqa: E731
        if mode == "weighted" and num_samples is None and sel.samples_per_epoch() is not None:
            # the selection's per-epoch draw count, scaled to the part of it this dataset holds
            num_samples = round(sel.samples_per_epoch() * len(positions) / max(len(sel), 1))
        positive = int((weights > 0).sum())
        if mode == "weighted" and num_samples is None:
            num_samples = positive
        uniform = mode == "subset" or (epoch_weights is None and bool(np.all(weights == weights[:1])))
        replacement = self._replacement(mode, sel, weights, num_samples, positive)
        try:
            sampler = WeightedSubsetSampler(
                positions,
                weights=None if uniform else weights,
                mode=mode,
                num_samples=num_samples,
                replacement=replacement,
                seed=self.seed,
                epoch_weights=epoch_weights,
            )
        except ValueError as err:
            raise ConfigError(f"DataSelectionCallback: {err}") from None
        sampler.set_epoch(trainer.current_epoch)
        self._samplers = [sampler]
        final: Any = sampler
        if self.batching == "mixed":
            # Our own DistributedSampler at any world size: contiguous, mixed pieces of one order per rank.
            final = ClusterMixedSampler(sampler, self._cluster_ids(keys), trainer.world_size, trainer.global_rank,
                                        drop_last=dl.drop_last)
        elif trainer.world_size > 1:
            # Our own DistributedSampler: Lightning leaves it alone, and no rank lists the whole order.
            final = DistributedWeightedSubsetSampler(sampler, trainer.world_size, trainer.global_rank, drop_last=dl.drop_last)
        restored = self._restored or {}
        done = int(restored.get("batches_done", 0))
        if done and int(restored.get("epoch", -1)) == trainer.current_epoch and dl.batch_size:
            # Resuming mid-epoch: Lightning counts the finished batches but restarts the loader,
            # so skip what this rank already trained on, and the epoch continues where it stopped.
            final.skip_once(trainer.current_epoch, done * dl.batch_size)
            self._restored = None
        new_dl = _update_dataloader(dl, final, mode=RunningStage.TRAINING)
        self._record(int(found_mask.sum()), len(dataset), len(sampler))
        return new_dl

    def _cluster_ids(self, keys: pa.Array) -> np.ndarray:
        """Cluster id per dataset position for ``batching="mixed"`` (from ``clusters`` or the manifest's column)."""
        source = self.clusters
        if source is None:
            path = self._source if isinstance(self._source, (str, os.PathLike)) else None
            if path is not None and Path(path).is_dir():
                path = Path(path) / "selection.parquet"
            if path is None or "cluster" not in pq.read_schema(path).names:
                raise ConfigError("DataSelectionCallback: batching='mixed' needs cluster ids: pass clusters= (one id per "
                                  "dataset sample, or a Parquet file of key, cluster) or a selection manifest with a 'cluster' column")
            source = path
        try:
            return cluster_ids(keys, source)
        except DataError as err:
            raise DataError(f"DataSelectionCallback: {err}") from None

    def _apply_stream(self, trainer: "pl.Trainer", dl: DataLoader) -> None:
        sel = self.resolve()
        if self.batching == "mixed":
            raise ConfigError("DataSelectionCallback: batching='mixed' orders samples through a sampler, which needs a "
                              "map-style dataset; use data.style=map or batching='shuffle'")
        pipeline = dl.dataset
        stages = getattr(pipeline, "pipeline", None)
        if not isinstance(stages, list):
            raise ConfigError(
                f"DataSelectionCallback: the iterable dataset {type(pipeline).__name__} is not a webdataset pipeline; "
                "use a webdataset.WebDataset/DataPipeline, or add lightning_alchemist.sampling.KeyFilter to your stream yourself"
            )
        mode = self._effective_mode()
        if sel.schedule:
            raise ConfigError("DataSelectionCallback: curriculum schedules need a map-style dataset (a sampler); use data.style=map")
        keys_in_data = None
        urls = shard_urls(pipeline) if self.epoch_length is None else None  # given a length, skip the scan
        if urls:
            truncated: list[str] = []
            keys_in_data = scan_tar_keys(urls, truncated)
            if truncated:
                names = ", ".join(os.path.basename(u) for u in truncated[:3])
                more = f" and {len(truncated) - 3} more" if len(truncated) > 3 else ""
                rank_zero_warn(
                    f"DataSelectionCallback: {len(truncated)} of {len(urls)} shards are truncated or corrupt ({names}{more}); "
                    "only the samples before the break are counted for the key check and the epoch length"
                )
            filters = stream_key_filters(pipeline)
            if keys_in_data is not None and filters:  # e.g. the datamodule's split: count what the stream yields
                keys_in_data = [k for k in keys_in_data if all(f(k) for f in filters)]
        if keys_in_data is not None:
            present = pc.is_in(sel.keys, value_set=pa.array(keys_in_data, pa.string())).to_numpy(zero_copy_only=False)
            found = int(present.sum())
            self._check_match(found, len(keys_in_data), "webdataset shards")
            self._check_rated(keys_in_data)
        else:
            present = np.ones(len(sel), dtype=bool)
            found = None
            if self.epoch_length is None:
                rank_zero_warn(
                    "DataSelectionCallback: cannot list the keys of this stream's shards (not local tar files); "
                    "the share of the selection present is not checked"
                )
        w = sel.weights[present]
        if mode == "subset":
            probs = np.where(w > 0, 1.0, 0.0)
        else:
            target = self.num_samples
            if target is None and sel.samples_per_epoch() is not None:
                target = sel.samples_per_epoch() * float(present.sum()) / max(len(sel), 1)
            if target is None:
                # No draw count (a hand-written manifest): keep each key with probability
                # weight / max weight per pass, so what a (cycling) stream trains on is ∝ weight.
                probs = w / max(float(w.max()), 1e-300) if len(w) else w
            else:
                # A draw of `target` samples per pass: inclusion probabilities ∝ weight, capped at 1.
                scale = target / max(float(w.sum()), 1e-300)
                probs = np.minimum(1.0, w * scale)
        positive = probs > 0
        chosen = sel.keys.filter(pa.array(present)).filter(pa.array(positive))
        expected = float(probs.sum())
        filt = KeyFilter(chosen, probs[positive], seed=self.seed)
        filt.set_epoch(trainer.current_epoch)
        old = [i for i, s in enumerate(stages) if isinstance(s, KeyFilter)]
        if old:  # the user's hook returned the same pipeline again (reload): replace our stage
            stages[old[0]] = filt
        else:
            pos = find_insert_position(pipeline)
            if pos is None:
                raise ConfigError(
                    "DataSelectionCallback: cannot find where this pipeline forms samples from tar members "
                    "(webdataset's tarfile_to_samples); add lightning_alchemist.sampling.KeyFilter to it yourself"
                )
            stages.insert(pos, filt)
        self._filters = [filt]
        total = self.epoch_length if self.epoch_length is not None else (expected if found is not None else None)
        if total is not None:
            n = per_worker_epoch(total, trainer.world_size, dl.num_workers, batch_size_of(pipeline))
            pipeline.with_epoch(n)
            if hasattr(pipeline, "size"):
                pipeline.size = n * max(dl.num_workers, 1)
        else:
            rank_zero_warn(
                "DataSelectionCallback: epoch length unknown for this stream; pass epoch_length= so all ranks step equally"
            )
        self._record(found if found is not None else -1, len(keys_in_data) if keys_in_data is not None else -1, expected)

    def _record(self, found: int, dataset_size: int, per_epoch: float) -> None:
        sel = self.resolve()
        self.stats = {
            "found": found,
            "selected": len(sel),
            "dataset_size": dataset_size,
            "samples_per_epoch": per_epoch,
            "found_ratio": found / max(len(sel), 1) if found >= 0 else float("nan"),
            "keep_ratio": per_epoch / dataset_size if dataset_size > 0 else float("nan"),
        }
        rank_zero_info(
            f"DataSelectionCallback: {found} of {len(sel)} selected keys found in {dataset_size} samples; "
            f"{per_epoch:.0f} samples per epoch (effective keep ratio {self.stats['keep_ratio']:.3f}, mode={self.mode})"
        )
