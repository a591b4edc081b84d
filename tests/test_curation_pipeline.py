"""The curation group in the pipeline: composes, validates, sweeps, and a tiny run writes provenance and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import compose, load_recipe
from lightning_alchemist.errors import ConfigError

TOY = [
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
    "data.batch_size=8", "data.shapes.num_pool=1000", "data.shapes.num_val=200", "data.shapes.shard_size=500",
    "eval.num_prompts=4", "eval.fid_real=32", "eval.val_batches=1",
]


def test_curation_group_defaults_to_none_and_plans_no_stage():
    from lightning_alchemist.pipeline.run import Plan
    from lightning_alchemist.schema import validate

    def plan_stages(cfg):
        return Plan(validate(cfg, check_paths=False))

    cfg = compose("config", ["selection=random"])
    assert cfg.curation.name == "none"
    plan = plan_stages(cfg)
    assert plan.curation is None and plan.name == "random" and plan.mode == "subset"
    dedup = plan_stages(compose("config", ["selection=random", "curation=dedup", "keep=1.0"]))
    # dedup runs even at keep=1 (it removes copies), and needs no rater with a rating-free strategy
    assert dedup.select and not dedup.rate and dedup.name == "dedup+random"
    dbp = plan_stages(compose("config", ["curation=dbp", "curation.rebalance=sqrt"]))
    assert dbp.rate and dbp.mode == "weighted" and dbp.curation.budgets


def test_curation_sweeps_check_every_value_and_bad_values_are_one_line():
    from helpers import CONF_DIR
    from lightning_alchemist.cli import check_overrides
    from lightning_alchemist.schema import validate

    first = check_overrides("config", ["curation=dedup", "curation.eps=0.05,0.1"], CONF_DIR, check=lambda c: validate(c, False))
    assert first.curation.eps == 0.05
    with pytest.raises(ConfigError, match=r"curation\.eps") as err:
        check_overrides("config", ["curation=dedup", "curation.eps=0.05,1.5"], CONF_DIR, check=lambda c: validate(c, False))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"rater\.score\.store_embedding=true"):
        validate(compose("config", ["curation=dedup", "curation.embeddings.source=ratings"]), check_paths=False)
    validate(compose("config", ["curation=dedup", "curation.embeddings.source=ratings", "rater.score.store_embedding=true"]),
             check_paths=False)
    with pytest.raises(ConfigError, match="curriculum"):
        validate(compose("config", ["curation=dbp", "selection=curriculum"]), check_paths=False)


def test_tiny_run_with_dedup_writes_provenance_and_report(tmp_path):
    from lightning_alchemist.pipeline.run import embeddings_stage
    from lightning_alchemist.schema import validate

    overrides = TOY + ["selection=random", "curation=dedup", f"out={tmp_path}"]
    report = load_recipe("train").train(compose("config", overrides))
    stages = report["stages"]
    assert set(stages) == {"embeddings", "selection", "train"}
    folder = Path(stages["selection"]["path"])
    table = pq.read_table(folder / "selection.parquet")
    assert {"key", "weight", "cluster", "stage"} <= set(table.column_names) and table.num_rows == 500
    prov = pq.read_table(folder / "curation.parquet").to_pydict()
    assert len(prov["key"]) == 1000 and sum(prov["kept"]) == 500
    dropped = [i for i, s in enumerate(prov["stage"]) if s == "dedup"]
    assert dropped and all(prov["dup_of"][i] is not None and not prov["kept"][i] for i in dropped)
    cur = report["curation"]
    assert cur["counts"]["dedup"] == len(dropped) and cur["counts"]["kept"] == 500
    assert report["selection"]["strategy"] == "curation:dedup+random" and report["params"]["selection"] == "dedup+random"
    assert report["defects"]["duplicate"]["kept_share"] < 0.3  # shapes' copies go first
    files = report["files"]
    assert {"curation_clusters", "curation_samples"} <= set(files)
    assert "## Curation (dedup" in (tmp_path / "report" / "summary.md").read_text()
    # the embeddings are stored once: a second stage call (another eps, another strategy) reuses them
    v = validate(compose("config", overrides + ["curation.eps=0.1"]))
    again = embeddings_stage(v, None, tmp_path / "cache", v.data_id, None)
    assert again.cached and again.fingerprint == stages["embeddings"]["fingerprint"]
    assert json.loads((Path(again.path) / "embeddings.json").read_text())["rows"] == 1000
