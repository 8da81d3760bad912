"""Harvest stage: run a causal LM over a text data set and write one layer's residual stream to a store."""

from harvest.config import HarvestConfig
from harvest.errors import HarvestError
from harvest.runner import HarvestResult, harvest

__all__ = ["HarvestConfig", "HarvestError", "HarvestResult", "harvest"]
