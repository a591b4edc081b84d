"""One typed configuration, checked before any work: every group's schema, its defaults, and ``validate``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
from helpers import CONF_DIR, ROOT, compose

from lightning_alchemist.errors import AlchemistError, ConfigError
from lightning_alchemist.schema import validate

# At least one bad value per field kind of every group: int, float, bool, choice, list of choices,
# optional, nested, an unknown key, a cross-field rule; each must name its key.
BAD = [
    ("data.batch_size=many", "data.batch_size"),
    ("data.style=foo", "data.style"),
    ("data.num_workers=-1", "data.num_workers"),
    ("data.shapes.num_pool=lots", "data.shapes.num_pool"),
    ("data.bogus=1", "data.bogus"),
    ("model.transformer.depth=deep", "model.transformer.depth"),
    ("model.tokenizer.using_sa=perhaps", "model.tokenizer.using_sa"),
    ("model.nope=1", "model.nope"),
    ("finetune.lr=fast", "finetune.lr"),
    ("finetune.mode=half", "finetune.mode"),
    ("finetune.schedule=zigzag", "finetune.schedule"),
    ("finetune.caption_dropout=1.5", "finetune"),
    ("rater.epochs=abc", "rater.epochs"),
    ("rater.group_head=x", "rater.group_head"),
    ("rater.meta_gradient=magic", "rater.meta_gradient"),
    ("rater.alpha0=2", "rater.alpha0"),
    ("rater.network.width=102", "rater.network.width"),
    ("rater.proxy_optim.lr=quick", "rater.proxy_optim.lr"),
    ("rater.proxy.transformer.depth=x", "rater.proxy.transformer.depth"),
    ("selection.sigma=-1", "selection.sigma"),
    ("selection.n=1.5", "selection.n"),
    ("selection.mu=middle", "selection.mu"),
    ("trainer.max_steps=long", "trainer.max_steps"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.enable_checkpointing=sometimes", "trainer.enable_checkpointing"),
    ("eval.num_prompts=1", "eval.num_prompts"),
    ("eval.fid_features=[bogus]", "eval.fid_features"),
    ("eval.align_on=[mood]", "eval.align_on"),
    ("eval.val_batches=0", "eval.val_batches"),
    ("keep=0", "keep"),
    ("keep=lots", "keep"),
    ("seed=abc", "seed"),
]


@pytest.mark.parametrize("override,key", BAD)
def test_bad_value_is_one_line_naming_the_key_before_any_model(override, key, monkeypatch):
    import lightning_alchemist.proxy.factory as factory

    def no_build(*args, **kwargs):  # nothing may be built while checking a config
        raise AssertionError("a model was built during validation")

    monkeypatch.setattr(factory, "build_proxy", no_build)
    with pytest.raises(AlchemistError) as err:
        compose("config", [override], check=validate)
    message = str(err.value)
    assert "\n" not in message and key in message, message


def test_every_sweep_value_is_checked_before_the_first_job():
    with pytest.raises(ConfigError, match=r"keep.*in the sweep job with keep=0"):
        compose("config", ["keep=0.5,0"], check=validate)
    with pytest.raises(ConfigError, match="selection.sigma"):
        compose("config", ["selection=gsample,shift_gauss", "selection.sigma=0.1,-2"], check=validate)


def test_a_key_given_twice_says_how_to_quote():
    with pytest.raises(ConfigError, match="more than once.*quote"):
        compose("config", ["data=wds", "data.urls=/d/a-0.tar", "data.urls=/d/a-1.tar"])


def test_the_recipe_fails_within_seconds_with_one_line(tmp_path):
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "train.py"), "rater.epochs=abc", f"out={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    seconds = time.time() - t0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "rater.epochs" in lines[0], proc.stderr[-2000:]
    assert seconds < 30, seconds  # imports + compose; nothing is built
    assert not (tmp_path / "cache").exists()


def test_yaml_files_only_select_and_override():
    """A default-valued key in a group's YAML would be a second source of that default."""
    from omegaconf import OmegaConf

    from lightning_alchemist.config import DataConfig
    from lightning_alchemist.curation.plan import CurationConfig
    from lightning_alchemist.metrics.evaluate import EvalConfig
    from lightning_alchemist.proxy.lora import FinetuneConfig
    from lightning_alchemist.rater.config import RaterConfig
    from lightning_alchemist.target.trainer import TrainerConfig

    schemas = {"data": DataConfig, "finetune": FinetuneConfig, "rater": RaterConfig, "trainer": TrainerConfig, "eval": EvalConfig,
               "curation": CurationConfig}
    for group, cls in schemas.items():
        defaults = cls()
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            node = OmegaConf.load(path)
            for key in node:
                if key in ("defaults", "name") or OmegaConf.is_missing(node, key):
                    continue
                value = node[key]
                if OmegaConf.is_config(value):
                    continue
                assert value != getattr(defaults, key), f"{path.name}: '{group}.{key}: {value}' repeats the dataclass default"


def test_python_rater_and_default_recipe_train_the_same_rater():
    from lightning_alchemist.config import as_container
    from lightning_alchemist.rater.config import RaterConfig

    recipe = validate(compose("config", [])).rater
    python = RaterConfig()
    fields = [f.name for f in dataclasses.fields(RaterConfig) if f.name != "proxy"]  # from Python the proxy is passed built
    assert {f: as_container(getattr(recipe, f)) for f in fields} == {f: as_container(getattr(python, f)) for f in fields}
    assert recipe.proxy.name == "star_tiny"


def test_choices_compare_and_serialise_as_strings():
    import json

    from lightning_alchemist.config import as_container
    from lightning_alchemist.metrics.evaluate import Attribute
    from lightning_alchemist.metrics.judge import ATTRIBUTES
    from lightning_alchemist.rater.config import GroupHead

    cfg = validate(compose("config", [])).rater
    assert cfg.group_head == "temperature" and isinstance(cfg.group_head, GroupHead)
    assert {"temperature": 1}[cfg.group_head] == 1 and json.dumps(as_container(cfg))  # hash and JSON like the string
    assert set(Attribute.values()) == set(ATTRIBUTES)


def test_validate_returns_the_typed_groups(tmp_path):
    from lightning_alchemist.proxy.star.proxy import StarConfig
    from lightning_alchemist.selection.strategies import ShiftGaussian

    v = validate(compose("config", [f"out={tmp_path}", "rater.proxy=star_tiny"]))
    assert isinstance(v.model, StarConfig) and isinstance(v.rater_proxy, StarConfig) and isinstance(v.strategy, ShiftGaussian)
    assert v.keep == 0.5 and v.data.num_workers == 0 and v.trainer.num_threads == 1


def test_num_workers_defaults_to_the_machine():
    from lightning_alchemist.config import data_config, default_num_workers

    assert data_config({"name": "wds", "urls": "/x.tar"}).num_workers == default_num_workers() <= 4


def test_lightning_lines_are_logged_once_under_hydra(capsys):
    """Hydra installs a root handler; Lightning has its own and propagates: the recipe keeps one of them."""
    import logging

    from lightning_alchemist.cli import _quiet_duplicate_logs

    root, lit = logging.getLogger(), logging.getLogger("lightning.pytorch")
    saved = (list(root.handlers), list(lit.handlers), lit.propagate, root.level)
    try:
        root.handlers = [logging.StreamHandler(sys.stderr)]
        root.setLevel(logging.INFO)
        lit.handlers = [logging.StreamHandler(sys.stderr)]
        lit.propagate = True
        _quiet_duplicate_logs()
        lit.info("GPU available: False")
        assert capsys.readouterr().err.count("GPU available: False") == 1
    finally:
        root.handlers, lit.handlers, lit.propagate = saved[0], saved[1], saved[2]
        root.setLevel(saved[3])


def test_hydra_keys_may_repeat():
    """Lightning's DDP launcher appends hydra.run.dir for its child processes, even when the user gave one."""
    from lightning_alchemist.cli import sweep_variants

    assert sweep_variants(["hydra.run.dir=/a", 'hydra.run.dir="/a"', "keep=0.5"]) == [["keep=0.5"]]


def test_experiment_sweeps_use_hydra_grammar():
    """An experiment's ``hydra.sweeper.params`` may use range()/choice(): every value is checked, not a comma split."""
    from omegaconf import OmegaConf

    from lightning_alchemist.cli import _config_sweeps

    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {
        "keep": "range(0.2,0.7,0.2)", "selection": "choice(random,topk)", "seed": "3"}}}})
    sweeps = _config_sweeps(cfg)
    assert [round(float(v), 3) for v in sweeps["keep"]] == [0.2, 0.4, 0.6]
    assert sweeps["selection"] == ["random", "topk"]
    assert sweeps["seed"] == ["3"]
