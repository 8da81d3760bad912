"""The harvest configuration; the CLI's options are generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harvest.errors import HarvestError

STORE_DTYPES = ("bfloat16", "float16")
MAX_CONTEXT = 32768
COMPUTE_DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class HarvestConfig:
    """What to harvest and where to write it."""

    store: str
    """Local path or fsspec URL of the activation store."""
    model: str = "google/gemma-2-2b"
    """Hugging Face hub id or local folder of a causal LM."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model; None is the default branch."""
    dataset: str = "monology/pile-uncopyrighted"
    """Hub data set id (streamed), or a local .json/.jsonl/.txt/.parquet file, folder or glob."""
    dataset_config: str | None = None
    """Hub data set configuration name, if it has several."""
    split: str = "train"
    """Data set split to stream."""
    text_field: str = "text"
    """Column holding the text (local .txt files always use ``text``)."""
    layer: int = 19
    """Decoder layer (0-based) whose output (the residual stream after it) is stored."""
    tokens: int = 10_000_000
    """Exact number of rows (token positions) to store."""
    context_length: int = 128
    """Tokens per context including the BOS token that starts it."""
    include_bos: bool = False
    """Store the BOS position of each context too (excluded by default: its activations are outliers)."""
    batch_size: int | None = None
    """Contexts per forward pass; None picks 64 on CUDA and 8 on CPU."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    compute_dtype: str = "auto"
    """Dtype the LM runs in; ``auto`` is bfloat16 on CUDA and float32 on CPU (CPU bf16 matmuls are slow)."""
    store_dtype: str = "bfloat16"
    """Activation dtype on disk: bfloat16 (default, the model's own precision) or float16."""
    chunk_rows: int | None = None
    """Rows per chunk; None sizes chunks to about 24 MiB."""
    shard: int = 0
    """This process's shard (0-based) of a harvest split over several processes or nodes."""
    num_shards: int = 1
    """How many shards the harvest is split into; each writes its own chunks of the one store."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for the store (credentials, endpoint)."""

    def __post_init__(self) -> None:
        if self.tokens <= 0:
            raise HarvestError(f"--tokens must be positive, got {self.tokens}")
        if not 2 <= self.context_length <= MAX_CONTEXT:
            raise HarvestError(f"--ctx must be 2..{MAX_CONTEXT} (BOS plus at least one token; positions are "
                               f"stored as int16), got {self.context_length}")
        if self.layer < 0:
            raise HarvestError(f"--layer must be 0 or more, got {self.layer}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise HarvestError(f"--batch-size must be positive, got {self.batch_size}")
        if self.store_dtype not in STORE_DTYPES:
            raise HarvestError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {self.store_dtype}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise HarvestError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype}")
        if self.chunk_rows is not None and self.chunk_rows <= 0:
            raise HarvestError(f"--chunk-rows must be positive, got {self.chunk_rows}")
        if not 0 <= self.shard < self.num_shards:
            raise HarvestError(f"--shard {self.shard} must be in 0..{self.num_shards - 1} (--num-shards)")
