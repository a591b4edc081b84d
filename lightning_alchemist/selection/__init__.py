"""Ratings I/O, pruning strategies and the selection manifest (numpy + pyarrow; no torch)."""

from lightning_alchemist.selection.manifest import Selection
from lightning_alchemist.selection.ratings import Ratings
from lightning_alchemist.selection.strategies import (
    STRATEGIES,
    Block,
    BottomK,
    Curriculum,
    Gsample,
    Random,
    ShiftGaussian,
    Strategy,
    TopK,
    build_strategy,
)

__all__ = [
    "STRATEGIES",
    "Block",
    "BottomK",
    "Curriculum",
    "Gsample",
    "Random",
    "Ratings",
    "Selection",
    "ShiftGaussian",
    "Strategy",
    "TopK",
    "build_strategy",
]
