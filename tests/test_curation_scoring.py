"""The scorer's opt-in ``embedding`` column (rater.score.store_embedding) and curation reading it."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pyarrow.parquet as pq
import torch

from lightning_alchemist.curation import embeddings_from_ratings
from lightning_alchemist.rater.direct import ProxyScorer
from lightning_alchemist.rater.loader import PairedLoader
from lightning_alchemist.rater.module import RaterModule
from lightning_alchemist.rater.scoring import score
from lightning_alchemist.selection.ratings import Ratings

from rater_toys import ToyProxy, ToyScoreData, loader, make_samples

SMALL = {"network": {"depth": 1, "width": 32, "heads": 2, "head_hidden": 16}, "probe_size": 0}


def test_scorer_writes_pooled_features_that_curation_reads(tmp_path):
    torch.manual_seed(0)
    rater = RaterModule(ToyProxy(), 48, 16, {**SMALL, "score": {"store_embedding": True}})
    t = pl.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    t.fit(rater, PairedLoader(loader(make_samples(48, 0.5, 1, "p"), 16, True), loader(make_samples(48, 0, 2, "v"), 16)))
    dm = ToyScoreData(batch_size=8)
    score(rater, dm, tmp_path / "ratings", trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    first = sorted((tmp_path / "ratings").glob("*.parquet"))[0]
    assert pq.read_schema(first).field("embedding").type.list_size == 32  # the rater's pooled width
    ratings = Ratings.read(tmp_path / "ratings")  # the ratings reader ignores the extra column
    emb = embeddings_from_ratings(tmp_path / "ratings")
    assert emb.keys.to_pylist() == ratings.keys.to_pylist() and emb.dim == 32
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    # without the option, no column (and another scoring fingerprint: a rerun with it rescores)
    rater.cfg.score.store_embedding = False
    score(rater, ToyScoreData(batch_size=8), tmp_path / "plain", trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    assert "embedding" not in pq.read_schema(sorted((tmp_path / "plain").glob("*.parquet"))[0]).names


def test_direct_scorer_writes_the_proxys_pooled_inputs(tmp_path):
    scorer = ProxyScorer(ToyProxy(), {"objective": "contrast", "contrast_partners": 2, "score": {"store_embedding": True}})
    score(scorer, ToyScoreData(num_shards=2, per_shard=10, batch_size=8), tmp_path / "ratings",
          trainer_kwargs={"enable_progress_bar": False})
    emb = embeddings_from_ratings(tmp_path / "ratings")
    assert len(emb) == 20 and np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
