"""Test helpers: compose the repository's configs and load its recipes (no ``sys.path`` changes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Sequence

from lightning_alchemist.cli import check_overrides

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
RECIPES = ROOT / "recipes"


def compose(name: str = "config", overrides: Sequence[str] = (), check: Optional[Callable[[Any], Any]] = None) -> Any:
    """``conf/<name>.yaml`` composed with ``overrides``, as the recipes do it (one-line ConfigError on a bad value)."""
    return check_overrides(name, list(overrides), CONF_DIR, check=check)


def load_recipe(name: str) -> ModuleType:
    """``recipes/<name>.py`` as a module (imported by path: the recipes folder never goes on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_group(cfg: Any, key: str, node: Any) -> None:
    """Replace group ``key`` of a composed config with ``node`` (a mapping), on its schema's defaults where it has one."""
    import dataclasses

    from omegaconf import OmegaConf

    parent = OmegaConf.get_type(cfg)
    declared = {f.name: f.type for f in dataclasses.fields(parent)} if dataclasses.is_dataclass(parent) else {}
    schema = OmegaConf.get_type(cfg, key) if key in declared and declared[key] not in ("Any", Any) else None
    if dataclasses.is_dataclass(schema):
        cfg[key] = OmegaConf.merge(OmegaConf.structured(schema), node)
    else:
        cfg[key] = node
