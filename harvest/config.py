"""The harvest configuration; the CLI's options are generated from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harvest.errors import HarvestError
from store.format import STORAGE_DTYPES

STORE_DTYPES = tuple(STORAGE_DTYPES)
MAX_CONTEXT = 32768
COMPUTE_DTYPES = ("auto", "bfloat16", "float16", "float32")
LAYER_PLACEHOLDER = "{layer}"
"""Stands for the layer number in ``--store`` (one store per layer)."""


@dataclass(frozen=True)
class HarvestConfig:
    """What to harvest and where to write it."""

    store: str
    """Local path or fsspec URL of the activation store; ``{layer}`` in it stands for the layer number, as it must
    when several layers are harvested (one store each), e.g. ``stores/gemma-2-2b-L{layer}.zarr``."""
    model: str = "google/gemma-2-2b"
    """Hugging Face hub id or local folder of a causal LM."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model; None is the default branch."""
    dataset: str = "monology/pile-uncopyrighted"
    """Hub data set id (streamed), or a local .json/.jsonl/.txt file (each also .gz or .zst, like the Pile's
    .jsonl.zst) or .parquet file, a folder or a glob of them."""
    dataset_config: str | None = None
    """Hub data set configuration name, if it has several."""
    split: str = "train"
    """Data set split to stream."""
    text_field: str = "text"
    """Column holding the text (local .txt files always use ``text``)."""
    layers: tuple[int, ...] = (19,)
    """Decoder layer (0-based) whose output (the residual stream after it) is stored; repeat it for several layers
    in one forward pass, which stops after the deepest: one store each, so put ``{layer}`` in the store path."""
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
        self._check_layers()
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

    def _check_layers(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)
        if not layers:
            raise HarvestError("give at least one --layer")
        if any(not isinstance(x, int) or x < 0 for x in layers):
            bad = next(x for x in layers if not isinstance(x, int) or x < 0)
            raise HarvestError(f"--layer must be 0 or more, got {bad}")
        if len(set(layers)) != len(layers):
            raise HarvestError(f"--layer {max(layers, key=layers.count)} is given twice: give each layer once")
        if len(layers) > 1 and LAYER_PLACEHOLDER not in self.store:
            raise HarvestError(
                f"--store '{self.store}' has no {LAYER_PLACEHOLDER} placeholder, but {len(layers)} layers each need "
                f"a store of their own: put {LAYER_PLACEHOLDER} in it, e.g. --store "
                f"stores/model-L{LAYER_PLACEHOLDER}.zarr"
            )
        # Sorted: the order layers are given in changes nothing (each store is its layer's), so it is not kept.
        object.__setattr__(self, "layers", tuple(sorted(layers)))

    def store_of(self, layer: int) -> str:
        """The store that ``layer``'s rows go to: ``store`` with ``{layer}`` replaced."""
        return self.store.replace(LAYER_PLACEHOLDER, str(layer))

    def for_layer(self, layer: int) -> HarvestConfig:
        """The single-layer harvest whose store this harvest writes for ``layer``: what that store records as its
        configuration, so that it is the store a harvest of that layer alone would write."""
        if layer not in self.layers:
            raise HarvestError(f"layer {layer} is not one of this harvest's layers {list(self.layers)}")
        return replace(self, layers=(layer,), store=self.store_of(layer))
