"""The configuration of `pipeline synth`; the CLI's options are generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harvest.config import STORE_DTYPES
from harvest.errors import HarvestError

SAMPLERS = ("fast", "sae-lens")
"""``fast``: this tool's sparse sampler; ``sae-lens``: SAELens's own (the same distribution, slower)."""


@dataclass(frozen=True)
class SynthConfig:
    """Which synthetic model, how many rows of its stream, and where to write them."""

    store: str
    """Local path or fsspec URL of the store to write."""
    preset: str | None = None
    """A named model (harvest/synthetic/presets.py): synth-cpu, synth-mid or synth-16k (SynthSAEBench-16k)."""
    config: str | None = None
    """A JSON file holding SAELens's SyntheticModelConfig.to_dict(), instead of a preset."""
    samples: int = 1_000_000
    """Rows to sample and store."""
    seed: int = 0
    """Seed of the row stream (the model has its own, in its configuration)."""
    sampler: str = "fast"
    """``fast`` (sparse, exact) or ``sae-lens`` (SAELens's own sampler, dense): the same distribution."""
    slots: int | None = None
    """Width of each row's stored list of active features; None: twice the widest row of the stream's first 16
    blocks, rounded up to 8."""
    chunk_rows: int | None = None
    """Rows per chunk; None sizes chunks to about 24 MiB of activations."""
    store_dtype: str = "bfloat16"
    """Activation dtype on disk: bfloat16 or float16."""
    device: str = "auto"
    """Where the model is built and the rows sampled: auto (CUDA when present), cpu, cuda or cuda:N. CPU and CUDA
    draw different rows from the same seed."""
    model_cache: str | None = None
    """Folder of built models (default $HFG_CACHE/synthetic), so that a model is orthogonalised once."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store (credentials, endpoint)."""

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.config is None):
            raise HarvestError("give a synthetic model with --preset NAME or --config FILE (one of them)")
        if self.samples < 1:
            raise HarvestError(f"--samples must be at least 1, got {self.samples}")
        if self.seed < 0:
            raise HarvestError(f"--seed must be 0 or more, got {self.seed}")
        if self.sampler not in SAMPLERS:
            raise HarvestError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler}")
        if self.slots is not None and self.slots < 1:
            raise HarvestError(f"--slots must be at least 1, got {self.slots}")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise HarvestError(f"--chunk-rows must be positive, got {self.chunk_rows}")
        if self.store_dtype not in STORE_DTYPES:
            raise HarvestError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {self.store_dtype}")


HELDOUT_FIRST_ROW = 2**40
"""Where a streamed fit's held-out rows begin in the stream: past any training run's rows, whatever its --tokens."""


@dataclass(frozen=True)
class StreamConfig:
    """A fit's rows from a synthetic model's stream (``pipeline fit --synthetic``), generated on the fit's device."""

    synthetic: str | None = None
    """A preset name (synth-cpu, synth-mid, synth-16k), a SAELens SyntheticModelConfig JSON file, or a synthetic
    store (its model): train on rows generated from it instead of a store's; --store then names the store of its
    held-out rows (default OUT/heldout.zarr), written first."""
    synthetic_seed: int = 0
    """Seed of the row stream: the training rows are the stream's first --tokens rows, the rows a `pipeline synth`
    store of the same model and seed holds (on the same kind of device)."""
    heldout_samples: int = 65536
    """Rows of the held-out store evaluation reads (the stream's rows from row 2**40)."""
    sampler: str = "fast"
    """``fast`` or ``sae-lens``: the same distribution, other draws."""
    model_cache: str | None = None
    """Folder of built models (default $HFG_CACHE/synthetic)."""

    def __post_init__(self) -> None:
        if self.synthetic_seed < 0:
            raise HarvestError(f"--synthetic-seed must be 0 or more, got {self.synthetic_seed}")
        if self.heldout_samples < 1:
            raise HarvestError(f"--heldout-samples must be at least 1, got {self.heldout_samples}")
        if self.sampler not in SAMPLERS:
            raise HarvestError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler}")

    @property
    def preset(self) -> str | None:
        from harvest.synthetic.presets import PRESETS

        return self.synthetic if self.synthetic in PRESETS else None

    @property
    def config_file(self) -> str | None:
        return None if self.synthetic is None or self.preset is not None else self.synthetic

    @property
    def names_a_store(self) -> bool:
        """Whether --synthetic names a store (a folder with a zarr.json, or a URL), not a preset or a JSON file."""
        if self.synthetic is None or self.preset is not None:
            return False
        from pathlib import Path

        return "://" in self.synthetic or (Path(self.synthetic) / "zarr.json").exists()
