"""Creating and opening the Zarr arrays of a store, and which rows each chunk holds."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype

from store import format as fmt
from store import truth
from store.errors import CorruptStoreError, StoreError, StoreNotFoundError
from store.location import StoreLocation

# Zarr warns about every non-Zarr folder (our _harvest/ bookkeeping) when it lists a hierarchy.
warnings.filterwarnings("ignore", message="Object at .* is not recognized as a component of a Zarr hierarchy")
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part in the Zarr format 3")

ARRAY_CONFIG = {"write_empty_chunks": True}
"""Every chunk is written, even one equal to the fill value: a missing chunk file then always means damage."""


def array_specs(meta: fmt.StoreMeta) -> dict[str, dict]:
    """Name -> zarr.create_array arguments for every array of a store."""
    return _specs(meta.n_rows, meta.d_model, meta.chunk_rows, meta.storage_dtype, truth_geometry(meta))


def truth_geometry(meta: fmt.StoreMeta) -> tuple[int, int, int, int] | None:
    """(G, R, children, S) of a synthetic store's ground truth; None for an LM's store."""
    syn = meta.synthetic
    return None if syn is None else (syn.n_features, syn.rank, syn.n_children, syn.slots)


def chunk_grid(spec: dict) -> tuple[int, ...]:
    """How many chunks an array of this spec has along each dimension."""
    return tuple(fmt.ceil_div(n, c) for n, c in zip(spec["shape"], spec["chunks"], strict=True))


def chunk_key(name: str, coords: tuple[int, ...]) -> str:
    """The key of an array's chunk (zarr v3's default chunk key encoding, separator "/")."""
    return f"{name}/c/" + "/".join(map(str, coords))


def chunk_coords(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every chunk position of a grid, in C order."""
    out: list[tuple[int, ...]] = [()]
    for n in grid:
        out = [(*c, i) for c in out for i in range(n)]
    return out


def groups(meta: fmt.StoreMeta) -> tuple[str, ...]:
    """The intermediate groups the store's array names imply (``stats/mean`` lives in group ``stats``)."""
    return GROUPS + ((truth.GROUP,) if meta.synthetic is not None else ())


def array_shape(meta: fmt.StoreMeta, name: str) -> tuple[int, ...]:
    """The shape array ``name`` has in a store with these attributes."""
    return array_specs(meta)[name]["shape"]


def _specs(n: int, d: int, c: int, storage_dtype: str,
           truth_shape: tuple[int, int, int, int] | None = None) -> dict[str, dict]:
    n_stat_chunks = fmt.n_chunks(n, c)
    # Activations are not compressed: compression measured 1.0-1.26x on bf16 activations and halves read
    # speed (docs/store-format.md); crc32c (25 GB/s) makes every chunk self-checking.
    raw = {"serializer": BytesCodec(), "compressors": [Crc32cCodec()]}
    small = {"serializer": BytesCodec(), "compressors": [ZstdCodec(level=3), Crc32cCodec()]}
    truth_specs = {} if truth_shape is None else _truth_specs(n, d, c, *truth_shape, raw=raw, small=small)
    return truth_specs | {
        fmt.ACTIVATIONS: dict(
            shape=(n, d), chunks=(c, d), dtype=storage_dtype, fill_value=0,
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
            shape=(n_stat_chunks, d), chunks=(1, d), dtype="float64", fill_value=0.0,
            dimension_names=["chunk", "dim"], **raw,
        ),
        fmt.CHUNK_M2: dict(
            shape=(n_stat_chunks, d), chunks=(1, d), dtype="float64", fill_value=0.0,
            dimension_names=["chunk", "dim"], **raw,
        ),
        fmt.MEAN: dict(shape=(d,), chunks=(d,), dtype="float64", fill_value=0.0, dimension_names=["dim"], **raw),
        fmt.VAR: dict(shape=(d,), chunks=(d,), dtype="float64", fill_value=0.0, dimension_names=["dim"], **raw),
    }


def _truth_specs(n: int, d: int, c: int, G: int, R: int, children: int, S: int, *, raw: dict,
                 small: dict) -> dict[str, dict]:
    """A synthetic store's ground truth (store/truth.py): each row's active features and coefficients, chunked
    like its activations, and the model's arrays."""
    t = truth.GROUP

    def vector(name: str, length: int, dtype: str, fill: float | int, codecs: dict, dim: str) -> tuple[str, dict]:
        return f"{t}/{name}", dict(shape=(length,), chunks=(max(length, 1),), dtype=dtype, fill_value=fill,
                                   dimension_names=[dim], **codecs)

    specs = {
        truth.ROW_FEATURES: dict(shape=(n, S), chunks=(c, S), dtype="int32", fill_value=truth.NO_FEATURE,
                                 dimension_names=["row", "slot"], **small),
        truth.ROW_COEFFICIENTS: dict(shape=(n, S), chunks=(c, S), dtype="float32", fill_value=0.0,
                                     dimension_names=["row", "slot"], **small),
        f"{t}/dictionary": dict(shape=(G, d), chunks=(min(G, 4096), d), dtype="float32", fill_value=0.0,
                                dimension_names=["feature", "dim"], **raw),
        **dict([vector("bias", d, "float32", 0.0, raw, "dim")]),
    }
    for name in ("probability", "magnitude_mean", "magnitude_std"):
        specs.update([vector(name, G, "float32", 0.0, raw, "feature")])
    if R:
        specs[f"{t}/correlation_factor"] = dict(shape=(G, R), chunks=(G, R), dtype="float32", fill_value=0.0,
                                                dimension_names=["feature", "rank"], **raw)
        specs.update([vector("correlation_diag", G, "float32", 0.0, raw, "feature")])
    specs.update([vector("parent", G, "int32", -2, small, "feature"), vector("depth", G, "int16", -2, small, "feature"),
                  vector("exclusive", G, "uint8", 0, small, "feature"),
                  vector("scale_children", G, "uint8", 0, small, "feature"),
                  vector("children_offsets", G + 1, "int64", 0, small, "feature"),
                  vector("children", children, "int32", -1, small, "child")])
    return specs


def create_or_open_arrays(group: zarr.Group, meta: fmt.StoreMeta) -> dict[str, zarr.Array]:
    """Create every array, or open it where a concurrent shard writer created it first (same metadata)."""
    arrays = {}
    for name, spec in array_specs(meta).items():
        try:
            arrays[name] = group.create_array(name, config=ARRAY_CONFIG, **spec)
        except (zarr.errors.ContainsArrayError, zarr.errors.ContainsGroupError, FileExistsError):
            arrays[name] = group[name]
    return arrays


ROOT_DOC = "zarr.json"
GROUPS = ("stats",)
"""The intermediate groups the array names imply (``stats/mean`` lives in group ``stats``)."""
ARRAY_FIELDS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs", "node_type")
"""The keys of an array's zarr.json that decide how its bytes read, and so must be what the format specifies."""
_FIELD_WORDS = {"data_type": "dtype", "chunk_grid": "chunk shape", "fill_value": "fill value",
                "chunk_key_encoding": "chunk key encoding", "node_type": "node type"}


def doc_key(name: str) -> str:
    """The key of a node's metadata document (``""`` is the root)."""
    return f"{name}/zarr.json" if name else ROOT_DOC


def parse_doc(location: StoreLocation, key: str, raw: bytes) -> dict:
    """A metadata document's JSON object, or one CorruptStoreError line naming the file."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptStoreError(
            f"{location}/{key} is not valid JSON ({exc}): the metadata is corrupt; restore the file or re-harvest"
        ) from None
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"{location}/{key} is not a JSON object: the metadata is corrupt; restore it")
    return doc


def read_doc(location: StoreLocation, key: str) -> dict | None:
    """The parsed metadata document at ``key``, or None when the file does not exist; any other failure to read it
    (the store path is a file, no permission, an I/O error) is one StoreError line."""
    try:
        raw = location.read_bytes(key)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise StoreNotFoundError(f"{location} is a file, not an activation store (a folder): pass the store's "
                                 "folder") from None
    except PermissionError as exc:
        raise StoreError(f"cannot read {location}/{key}: {exc.strerror or exc}; check its permissions") from None
    except IsADirectoryError:
        raise CorruptStoreError(f"{location}/{key} is a folder, not a metadata document: the store is damaged; "
                                "restore it, or re-harvest") from None
    except OSError as exc:
        raise StoreError(f"cannot read {location}/{key}: {exc.strerror or exc}") from None
    return parse_doc(location, key, raw)


def read_root(location: StoreLocation) -> dict | None:
    """The root ``zarr.json`` (attributes plus, once complete, the consolidated metadata), checked for shape."""
    doc = read_doc(location, ROOT_DOC)
    if doc is None:
        return None
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group" or not isinstance(doc.get("attributes"), dict):
        raise CorruptStoreError(
            f"{location}/{ROOT_DOC} is not the metadata of a Zarr v3 group with attributes (zarr_format "
            f"{doc.get('zarr_format')!r}, node_type {doc.get('node_type')!r}): restore it or re-harvest"
        )
    consolidated = doc.get("consolidated_metadata")
    if consolidated is not None and not (
        isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict)
        and all(isinstance(v, dict) for v in consolidated["metadata"].values())
    ):
        raise CorruptStoreError(
            f"{location}/{ROOT_DOC} has malformed consolidated metadata: run `pipeline store finalize` to rebuild "
            "it, or restore the file"
        )
    return doc


def consolidated_docs(root: dict) -> dict[str, dict] | None:
    """Node name -> its document as consolidated in the root, or None when the root holds no consolidation."""
    consolidated = root.get("consolidated_metadata")
    return None if consolidated is None else consolidated["metadata"]


def read_meta(location: StoreLocation) -> fmt.StoreMeta | None:
    """The store's attributes, or None when nothing is at the location yet."""
    root = read_root(location)
    if root is None:
        return None
    return fmt.StoreMeta.from_attrs(root["attributes"], where=f"{location}/{ROOT_DOC}")


def open_group(location: StoreLocation, *, read_only: bool = True, use_consolidated: bool | None = None) -> zarr.Group:
    """Open the store's group; metadata zarr cannot parse is one CorruptStoreError line, never a traceback."""
    try:
        with location.translate_unreachable():
            return zarr.open_group(
                location.zarr_store(read_only=read_only), mode="r" if read_only else "r+",
                use_consolidated=use_consolidated,
            )
    except (ValueError, TypeError, KeyError, AttributeError, zarr.errors.BaseZarrError) as exc:
        raise CorruptStoreError(
            f"{location}/{ROOT_DOC} holds metadata zarr cannot read ({type(exc).__name__}: {exc}): run "
            "`pipeline store verify` to find the damaged file"
        ) from None


def open_array(location: StoreLocation, group: zarr.Group, name: str) -> zarr.Array:
    """One array of an open group; a missing or unreadable one is one CorruptStoreError line naming it."""
    try:
        arr = group[name]
    except KeyError:
        raise CorruptStoreError(f"{location}: array '{name}' is missing: the store is damaged; re-harvest it") from None
    except (ValueError, TypeError, AttributeError, zarr.errors.BaseZarrError) as exc:
        raise CorruptStoreError(
            f"{location}/{doc_key(name)} holds metadata zarr cannot read ({exc}): restore it or re-harvest"
        ) from None
    if not isinstance(arr, zarr.Array):
        raise CorruptStoreError(f"{location}: '{name}' is a group, not an array: the store is damaged")
    return arr


def array_doc(arr: zarr.Array) -> dict:
    """An open array's metadata as the JSON document zarr writes for it."""
    return json.loads(arr.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())


@lru_cache(maxsize=16)
def _expected_docs(n_rows: int, d_model: int, chunk_rows: int, storage_dtype: str,
                   truth_shape: tuple[int, int, int, int] | None) -> dict[str, dict]:
    group = zarr.create_group(zarr.storage.MemoryStore())
    specs = _specs(n_rows, d_model, chunk_rows, storage_dtype, truth_shape)
    return {name: array_doc(group.create_array(name, **spec)) for name, spec in specs.items()}


def expected_array_docs(meta: fmt.StoreMeta) -> dict[str, dict]:
    """Name -> the zarr.json document the format specifies for each array of a store with these attributes."""
    # Built once per geometry by creating the arrays in memory: zarr itself says what its documents look like.
    return _expected_docs(meta.n_rows, meta.d_model, meta.chunk_rows, meta.storage_dtype, truth_geometry(meta))


def array_doc_problems(
    name: str, doc: dict, expected: dict, where: str, *, shape: bool = True, codecs: bool = True
) -> list[str]:
    """One line per field of an array's document that is not what the format specifies, naming the file.

    ``shape=False`` skips the shape (an unfinished store may be shorter); ``codecs=False`` accepts any codecs
    (a store rewritten with compression by another tool still reads).
    """
    problems = []
    for key in ARRAY_FIELDS:
        if (key == "shape" and not shape) or (key == "codecs" and not codecs):
            continue
        if doc.get(key) != expected[key]:
            problems.append(
                f"{where}: {_FIELD_WORDS.get(key, key)} of '{name}' is {json.dumps(doc.get(key))}, where the format "
                f"and the store's attributes specify {json.dumps(expected[key])}: restore the file or re-harvest"
            )
    return problems


def metadata_checksum(attributes: dict, consolidated: dict[str, dict]) -> str:
    """sha256 over the root attributes (less the checksum itself) and every node's consolidated document, in
    canonical JSON: recorded at finalisation so that an edit of any metadata is caught by `store verify`."""
    attrs = {k: v for k, v in attributes.items() if k != "metadata_sha256"}
    canonical = json.dumps({"attributes": attrs, "metadata": consolidated}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def shard_chunks(n_chunks: int, shard: int, num_shards: int) -> range:
    """The chunks shard ``shard`` of ``num_shards`` writes, in order: chunks are dealt round-robin to shards.

    Dealt rather than cut into runs, so that a store extended to more chunks extends every shard's sequence and
    moves no boundary: the store a sharded harvest grows into is the one it would have written in one go.
    """
    return range(shard, n_chunks, num_shards)


@dataclass(frozen=True)
class ShardRows:
    """One shard's rows in its own order: its chunks (``shard_chunks``) laid end to end.

    A shard numbers the contexts of its own documents 0, 1, ... and writes them into its rows in that order; its
    row ``r`` is store row ``store_row(r)``. Chunks of a sharded store hold whole contexts, so every context lands
    whole in one chunk. With one shard both numberings are the same.
    """

    n_rows: int
    """Rows of the store."""
    chunk_rows: int
    chunks: range
    """The store chunks this shard owns, in the order it writes them."""

    @classmethod
    def of(cls, meta: fmt.StoreMeta, shard: int) -> ShardRows:
        return cls(meta.n_rows, meta.chunk_rows, shard_chunks(meta.n_chunks, shard, meta.num_shards))

    @property
    def n_local(self) -> int:
        """Rows this shard owns (its last chunk is short when it is the store's short last chunk)."""
        if not self.chunks:
            return 0
        last = self.chunks[-1]
        return (len(self.chunks) - 1) * self.chunk_rows + min(self.chunk_rows, self.n_rows - last * self.chunk_rows)

    def store_row(self, r: int) -> int:
        """The store row of this shard's row ``r`` (``0 <= r < n_local``)."""
        k, offset = divmod(r, self.chunk_rows)
        return self.chunks[k] * self.chunk_rows + offset


def harvest_chunk_rows(requested: int | None, d_model: int, context: fmt.ContextInfo, num_shards: int) -> int:
    """The chunk size a harvest uses: ``requested``, or about 24 MiB; a sharded harvest's chunks hold whole
    contexts (a multiple of the rows per context), so that every shard writes whole contexts into whole chunks."""
    per_ctx = context.rows_per_context
    if requested is not None:
        if num_shards > 1 and requested % per_ctx:
            fit = max(requested // per_ctx, 1) * per_ctx
            raise StoreError(
                f"--chunk-rows {requested} is not a multiple of the {per_ctx} rows per context, which a sharded "
                f"harvest needs (each chunk holds whole contexts): pass --chunk-rows {fit}, or leave it unset"
            )
        return requested
    rows = fmt.default_chunk_rows(d_model)
    return max(rows // per_ctx, 1) * per_ctx if num_shards > 1 else rows
