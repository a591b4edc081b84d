"""Every option of every config group composes into the root config and passes its group's validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import CONF_DIR, compose

GROUPS = ("data", "model", "finetune", "rater", "selection", "curation", "trainer", "eval", "captions", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# Each group's own validator (the one its builder runs): "module:function".
VALIDATORS = {
    "data": "lightning_alchemist.config:data_config",
    "model": "lightning_alchemist.proxy.factory:model_config",
    "finetune": "lightning_alchemist.proxy.lora:finetune_config",
    "rater": "lightning_alchemist.rater.heuristics:rater_group_config",  # learned or heuristic
    "selection": "lightning_alchemist.selection.strategies:build_strategy",
    "curation": "lightning_alchemist.curation.plan:curation_config",
    "trainer": "lightning_alchemist.target.trainer:trainer_config",
    "eval": "lightning_alchemist.metrics.evaluate:eval_config",
    "captions": "lightning_alchemist.curation.captions:captions_config",
}


def _validate(group: str, cfg) -> None:
    import importlib

    if group in VALIDATORS:
        module, name = VALIDATORS[group].split(":")
        getattr(importlib.import_module(module), name)(cfg[group])


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option):
    extra = ["data.urls=/tmp/shards.tar"] if (group, option) == ("data", "wds") else []
    if group == "data" and option in ("hpdv3", "laion", "flux_reason", "folder"):
        extra = ["data.root=/data/somewhere"]  # a released layout: data.root is required (checked at config time)
    cfg = compose("config", [f"{group}={option}", *extra])
    if group == "model" and not option.endswith("_tiny"):
        # Real models load local weights (nothing is downloaded): without the paths, a one-line error naming them.
        from lightning_alchemist.errors import ConfigError

        with pytest.raises(ConfigError, match="path") as err:
            _validate(group, cfg)
        assert "\n" not in str(err.value)
        return
    _validate(group, cfg)
    if group == "experiment":  # an experiment may change any group: all of them must still validate
        for other in GROUPS[:-1]:
            _validate(other, cfg)


def test_every_group_has_options_and_the_defaults_exist():
    for group in GROUPS:
        assert _options(group), f"conf/{group}/ is empty"
    text = (CONF_DIR / "config.yaml").read_text()
    for group in GROUPS[:-1]:
        assert f"- {group}: " in text, group
    assert Path(CONF_DIR / "experiment" / "paper_table.yaml").is_file()


def test_paper_table_is_a_sweep_at_equal_compute():
    cfg = compose("config", ["experiment=paper_table"])
    assert cfg.trainer.max_samples and cfg.trainer.max_samples > 0
