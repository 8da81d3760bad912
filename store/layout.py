"""Creating and opening the Zarr arrays of a store, and which rows each chunk holds."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from store import format as fmt
from store.location import StoreLocation

# Zarr warns about every non-Zarr folder (our _harvest/ bookkeeping) when it lists a hierarchy.
warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component of a Zarr hierarchy")
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part in the Zarr format 3")

ARRAY_CONFIG = {"write_empty_chunks": True}
"""Every chunk is written, even one equal to the fill value: a missing chunk file then always means damage."""


def array_specs(meta: fmt.StoreMeta) -> dict[str, dict]:
    """Name -> zarr.create_array arguments for every array of a store."""
    n, d, c = meta.n_rows, meta.d_model, meta.chunk_rows
    # Activations are not compressed: compression measured 1.0-1.26x on bf16 activations and halves read
    # speed (docs/store-format.md); crc32c (25 GB/s) makes every chunk self-checking.
    raw = {"serializer": BytesCodec(), "compressors": [Crc32cCodec()]}
    small = {"serializer": BytesCodec(), "compressors": [ZstdCodec(level=3), Crc32cCodec()]}
    return {
        fmt.ACTIVATIONS: dict(
            shape=(n, d), chunks=(c, d), dtype=meta.storage_dtype, fill_value=0,
            dimension_names=["row", "dim"], **raw,
        ),
        fmt.TOKENS: dict(shape=(n,), chunks=(c,), dtype="int32", fill_value=-1, dimension_names=["row"], **small),
        fmt.CONTEXT_IDS: dict(
            shape=(n,), chunks=(c,), dtype="int32", fill_value=-1, dimension_names=["row"], **small
        ),
        fmt.POSITIONS: dict(
            shape=(n,), chunks=(c,), dtype="int16", fill_value=-1, dimension_names=["row"], **small
        ),
        fmt.CHUNK_MEAN: dict(
            shape=(meta.n_chunks, d), chunks=(1, d), dtype="float64", fill_value=0.0,
            dimension_names=["chunk", "dim"], **raw,
        ),
        fmt.CHUNK_M2: dict(
            shape=(meta.n_chunks, d), chunks=(1, d), dtype="float64", fill_value=0.0,
            dimension_names=["chunk", "dim"], **raw,
        ),
        fmt.MEAN: dict(shape=(d,), chunks=(d,), dtype="float64", fill_value=0.0, dimension_names=["dim"], **raw),
        fmt.VAR: dict(shape=(d,), chunks=(d,), dtype="float64", fill_value=0.0, dimension_names=["dim"], **raw),
    }


def create_or_open_arrays(group: zarr.Group, meta: fmt.StoreMeta) -> dict[str, zarr.Array]:
    """Create every array, or open it where a concurrent shard writer created it first (same metadata)."""
    arrays = {}
    for name, spec in array_specs(meta).items():
        try:
            arrays[name] = group.create_array(name, config=ARRAY_CONFIG, **spec)
        except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError, FileExistsError):
            arrays[name] = group[name]
    return arrays


def read_meta(location: StoreLocation) -> fmt.StoreMeta | None:
    """The store's attributes, or None when nothing is at the location yet."""
    if not location.exists("zarr.json"):
        return None
    group = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
    return fmt.StoreMeta.from_attrs(dict(group.attrs), where=str(location))


@dataclass(frozen=True)
class RowMap:
    """Which rows each chunk holds, and which context and position each row holds.

    Contexts are laid down in order (``ContextInfo`` does that arithmetic), so a row's context and position
    are a function of its index; the store also writes them out (``context_ids``, ``positions``) so that a
    plain-zarr reader needs no arithmetic.
    """

    n_rows: int
    chunk_rows: int
    context: fmt.ContextInfo

    @property
    def n_chunks(self) -> int:
        return fmt.n_chunks(self.n_rows, self.chunk_rows)

    def chunk_bounds(self, j: int) -> tuple[int, int]:
        start = j * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_rows)

    def ids_and_positions(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(start, stop, dtype=np.int64)
        per_ctx = self.context.rows_per_context
        return (
            (rows // per_ctx).astype(np.int32),
            (rows % per_ctx + self.context.first_position).astype(np.int16),
        )

    @classmethod
    def of(cls, meta: fmt.StoreMeta, n_rows: int | None = None) -> RowMap:
        """The map of a store's rows (of its first ``n_rows``, when only those can be read)."""
        return cls(meta.n_rows if n_rows is None else n_rows, meta.chunk_rows, meta.context)


def shard_chunk_range(n_chunks: int, shard: int, num_shards: int) -> range:
    """The contiguous run of chunks that shard ``shard`` of ``num_shards`` writes (sizes differ by at most 1)."""
    base, extra = divmod(n_chunks, num_shards)
    start = shard * base + min(shard, extra)
    return range(start, start + base + (1 if shard < extra else 0))
