"""Config validation: a wrong type or an unknown key is a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import compose
from lightning_alchemist.config import DataConfig, data_config, to_dataclass
from lightning_alchemist.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_composes():
    cfg = compose("config", [])
    assert cfg.data.name == "shapes" and cfg.keep == 0.5 and "out" in cfg and "seed" in cfg


def test_overrides_and_sweeps_compose():
    cfg = compose("config", ["keep=0.2,0.5", "data.batch_size=8", "data=wds", "data.urls='/x/{0..3}.tar'"])
    assert cfg.keep == 0.2 and cfg.data.batch_size == 8 and cfg.data.name == "wds"
    assert cfg.data.urls == "/x/{0..3}.tar"


def test_unquoted_brace_pattern_error_says_how_to_quote():
    with pytest.raises(ConfigError) as err:
        compose("config", ["data=wds", "data.urls=/x/{0..3}.tar"])
    assert "\n" not in str(err.value) and "quote" in str(err.value)


@pytest.mark.parametrize(
    "override, words",
    [
        (["data.batch_size=abc"], ["data.batch_size", "abc"]),
        (["data.nonsense=1"], ["nonsense"]),
        (["keep=lots"], ["keep"]),
        (["nosuchkey=1"], ["nosuchkey"]),
        (["data=nosuchdata"], ["nosuchdata"]),
    ],
)
def test_bad_overrides_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as err:
        compose("config", override)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_to_dataclass_names_the_key_and_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        to_dataclass({"batch_size": "many"}, DataConfig, "data")
    assert "data.batch_size" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        to_dataclass({"bogus": 1}, DataConfig, "data")
    assert "bogus" in str(err.value) and "valid keys of 'data'" in str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="data.style"):
        data_config({"style": "weird"})
    with pytest.raises(ConfigError, match="data.urls"):
        data_config({"name": "wds"})


def test_recipe_prints_one_line_error_and_exits_2(tmp_path):
    env = {**os.environ, "LIGHTNING_ALCHEMIST_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "prepare.py"), "data.image_size=big", f"out={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "data.image_size" in lines[0]
    # a missing dataset path: one line that names it
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "prepare.py"), "data=wds", f"data.urls='{tmp_path}/nope-{{0..2}}.tar'", f"out={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "nope-0.tar" in lines[0], proc.stderr
