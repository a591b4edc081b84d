"""Encode once, train many: a cache of each sample's frozen-encoder outputs, keyed by sample key.

A proxy's frozen parts (STAR: the multi-scale VQ tokenizer and the text encoder; FLUX: the VAE and the
text encoder) give the same output for a sample every time, so the ``encode`` stage runs them once over
a dataset and writes the results per shard (:func:`~lightning_alchemist.features.encode.encode_features`);
rater training, scoring and target training then read them (:func:`~lightning_alchemist.features.dataset.use_features`)
instead of decoding images and running the encoders every step.

Layout: ``<root>/<split>/<shard>/`` holds ``keys.parquet`` (the keys, plus the fingerprint and the
tensors' dtypes in its schema metadata) and one ``<name>.npy`` per stored tensor, rows aligned with the
keys. A shard folder appears only complete (written under a temporary name, then renamed), so a killed
encode resumes by skipping finished shards and never writes a key twice.

Names are imported lazily (this package is imported by the rater and the target stages).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeaturesConfig": "config", "FeaturesUse": "config", "features_config": "config",
    "FeatureStore": "store", "find_store": "store", "finished_feature_shards": "store", "write_feature_shard": "store",
    "FeatureDataset": "dataset", "FeatureView": "dataset", "collate_features": "dataset", "use_features": "dataset",
    "FeatureEncoder": "encode", "FeatureWriter": "encode", "encode_features": "encode", "features_fingerprint": "encode",
    "data_fingerprint": "encode",
    "encoder_digest": "identity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_alchemist.features' has no attribute '{name}'")
    return getattr(importlib.import_module(f"lightning_alchemist.features.{module}"), name)
