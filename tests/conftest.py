"""Shared test set-up: offline, deterministic, small; a tiny `shapes` dataset per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the tiny models here run faster so on a shared 2-core machine (measured by
# the proxy and rater tests, which each used to set this themselves).
torch.set_num_threads(1)

SMALL_SHAPES = {"num_pool": 400, "num_val": 100, "shard_size": 100, "resolution": 32, "seed": 0}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """A session-wide cache folder (generated datasets, indices) outside the user's cache."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["LIGHTNING_ALCHEMIST_CACHE"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def small_shapes_cfg(cache_dir) -> dict:
    """A ``data`` config for a tiny ``shapes`` dataset (400 pool + 100 val, 32 px, 4+1 shards)."""
    return {"name": "shapes", "image_size": 32, "batch_size": 16, "cache_dir": cache_dir, "shapes": dict(SMALL_SHAPES)}


@pytest.fixture(scope="session")
def small_shapes(small_shapes_cfg):
    """The tiny ``shapes`` datamodule, prepared."""
    from lightning_alchemist.data.datamodule import T2IDataModule

    dm = T2IDataModule(small_shapes_cfg)
    dm.prepare_data()
    return dm
