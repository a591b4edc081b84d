"""lightning_alchemist: learned data selection for text-to-image training with PyTorch Lightning."""

__version__ = "0.1.0"
