"""Lightning callbacks: apply a data selection to any Trainer."""

from lightning_alchemist.callbacks.data_selection import DataSelectionCallback

__all__ = ["DataSelectionCallback"]
