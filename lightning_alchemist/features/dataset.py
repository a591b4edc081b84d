"""Reading the feature cache in place of images: a dataset view and the switch that installs it.

:class:`FeatureDataset` has the length, keys, captions and shards of the split it stands for, so every
sampler over that split (shuffled, distributed, whole shards per rank) draws the same indices and the
same batches; only the payload changes: the stored encoder outputs instead of a decoded image, or
(``with_images``) both, for a stage that measures the images but need not re-run the encoders on them
(direct scoring with the model-free image checks).
:func:`use_features` installs it on a ``T2IDataModule`` for a stage and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from lightning_alchemist.features.store import FeatureStore

__all__ = ["FeatureDataset", "FeatureView", "collate_features", "use_features"]

log = logging.getLogger(__name__)


class FeatureDataset(torch.utils.data.Dataset):
    """A map-style split (a :class:`~lightning_alchemist.data.mapstyle.ShardDataset`) served from a :class:`FeatureStore`.

    Item ``i`` is ``{"key", "caption", "shard", "features": {name: row}}`` for the split's sample ``i``;
    with ``with_images`` it is the split's decoded sample (``image``, ``meta`` too) with ``features`` added.
    A sample the encode stage could not decode (absent from the store; never decoded again here) or that
    no longer decodes is ``None`` and dropped by :func:`collate_features`, exactly as the image path drops it.
    Other attributes come from the split.
    """

    def __init__(self, base: Any, store: FeatureStore, with_images: bool = False) -> None:
        self.base = base
        self.store = store
        self.with_images = with_images

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "store", "with_images"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, i: int) -> Optional[dict[str, Any]]:
        if i < 0:
            i += len(self)
        key = self.base.keys[i]
        row = self.store.row(key)
        if row is None:
            return None
        if self.with_images:
            sample = self.base[i]
            return None if sample is None else {**sample, "features": row}
        return {"key": key, "caption": self.base.captions[i], "shard": self.base.urls[self.base.shard_index_of(i)], "features": row}


def collate_features(items: Sequence[Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Stack :class:`FeatureDataset` items: ``{"key", "caption", "shard", "meta", "features": {name: [B, ...]}}``,
    plus ``image`` ``[B, C, H, W]`` (and each sample's ``meta``) when the items carry their decoded images."""
    kept = [s for s in items if s is not None]
    if not kept:
        return {"key": [], "caption": [], "meta": [], "shard": [], "features": {}}
    batch = {
        "key": [s["key"] for s in kept],
        "caption": [s["caption"] for s in kept],
        "meta": [s.get("meta") or {} for s in kept],
        "shard": [s["shard"] for s in kept],
        "features": {name: torch.stack([s["features"][name] for s in kept]) for name in kept[0]["features"]},
    }
    if "image" in kept[0]:
        batch["image"] = torch.stack([s["image"] for s in kept])
    return batch


class FeatureView:
    """What ``T2IDataModule.view`` holds: maps a map-style split to ``(FeatureDataset, collate_features)``;
    ``with_images``: the items keep their decoded images beside the stored encodes."""

    def __init__(self, store: FeatureStore, with_images: bool = False) -> None:
        self.store = store
        self.with_images = with_images

    def __call__(self, dataset: Any) -> tuple[Any, Callable]:
        return FeatureDataset(dataset, self.store, with_images=self.with_images), collate_features


@contextlib.contextmanager
def use_features(datamodule: Any, store: Optional[FeatureStore], proxy: Any = None, stage: str = "stage",
                 with_images: bool = False) -> Iterator[bool]:
    """Serve ``datamodule``'s map-style loaders from ``store`` inside the block; yields whether it does.

    ``with_images``: the batches carry the decoded ``image`` too (a stage that measures the images, such as
    the scorer's image checks, while its encoders' outputs come from the store).

    Nothing changes (and the block runs on images) when ``store`` is None, when the data streams
    (``data.style=iterable``), when ``proxy``'s frozen encoders differ from those that wrote the store,
    or when the store holds none of the pool's keys; each of these but the first is logged.
    """
    if store is None:
        yield False
        return
    reason = ""
    if str(getattr(datamodule.cfg, "style", "map")) != "map":
        reason = "data.style=iterable streams images (the cache serves map-style data)"
    elif proxy is not None and store.encoders is not None:
        from lightning_alchemist.features.identity import encoder_digest

        if encoder_digest(proxy) != store.encoders:
            reason = "this stage's frozen encoders differ from those that wrote the cache"
    if not reason:
        found, total = store.covers(datamodule.pool.keys)
        if found == 0:
            reason = f"the cache holds none of the pool's {total} keys"
    if reason:
        log.warning("%s: not reading the feature cache %s: %s; encoding online", stage, store.root, reason)
        yield False
        return
    previous = getattr(datamodule, "view", None)
    datamodule.view = FeatureView(store, with_images=with_images)
    try:
        yield True
    finally:
        datamodule.view = previous
