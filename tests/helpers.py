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
