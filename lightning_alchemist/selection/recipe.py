"""The ``select`` stage as a library call: ratings folder -> ``selection.parquet`` + histogram PNG."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lightning_alchemist.errors import ConfigError
from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.plot import plot_selection
from lightning_alchemist.selection.ratings import Ratings
from lightning_alchemist.selection.strategies import Strategy, build_strategy

__all__ = ["SelectConfig", "run_select", "select_and_write"]


@dataclass
class SelectConfig:
    """Schema of ``conf/select.yaml`` (the ``selection`` group is validated by ``build_strategy``)."""

    ratings: Optional[str] = None
    keep: float = 0.5
    seed: int = 0
    out: str = "outputs"
    # Gaussian strategies only: write every non-head sample with its weight, for a fresh draw per epoch
    # (train with DataSelectionCallback(mode="weighted")).
    soft: bool = False
    selection: Any = None


def run_select(cfg: Any) -> dict[str, Path]:
    """Read ratings, apply the configured strategy, write ``out/selection.parquet`` and ``out/selection_histogram.png``."""
    from lightning_alchemist.config import as_container, to_dataclass

    node = dict(as_container(cfg))
    node = {k: v for k, v in node.items() if k in {f.name for f in dataclasses.fields(SelectConfig)}}
    conf = to_dataclass(node, SelectConfig, "select")
    if not conf.ratings:
        raise ConfigError("config 'ratings' is required: pass ratings=DIR/ratings (the scorer's output folder)")
    strategy = build_strategy(conf.selection)
    if strategy is None:
        raise ConfigError("config 'selection': 'none' selects nothing to write; pick a strategy, e.g. selection=shift_gauss")
    return select_and_write(Ratings.read(conf.ratings), strategy, conf.keep, conf.seed, Path(conf.out), soft=conf.soft)


def select_and_write(ratings: Ratings, strategy: Strategy, keep: float, seed: int, out: Path,
                     soft: bool = False) -> dict[str, Path]:
    """Apply ``strategy`` to ``ratings``; write ``out/selection.parquet`` and ``out/selection_histogram.png``."""
    if soft:
        if not hasattr(strategy, "soft"):
            raise ConfigError(f"config 'soft': strategy '{strategy.name}' has no soft form; use shift_gauss or gsample")
        selection: Selection = strategy.soft(ratings, keep, seed)
    else:
        selection = strategy.select(ratings, keep, seed)
    manifest = selection.write(out / "selection.parquet")
    plot = plot_selection(ratings, selection, out / "selection_histogram.png")
    print(f"selected {selection.meta['num_kept']} of {len(ratings)} ({strategy.name}, keep={keep}) -> {manifest}")
    return {"selection": manifest, "histogram": plot}
