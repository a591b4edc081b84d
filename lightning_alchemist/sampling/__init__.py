"""Samplers and stream stages that feed a selection to training (map-style and webdataset)."""

from lightning_alchemist.sampling.mixed import ClusterMixedSampler
from lightning_alchemist.sampling.samplers import DistributedWeightedSubsetSampler, WeightedSubsetSampler
from lightning_alchemist.sampling.webdataset import KeyFilter

__all__ = ["ClusterMixedSampler", "DistributedWeightedSubsetSampler", "KeyFilter", "WeightedSubsetSampler"]
