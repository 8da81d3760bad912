"""Reading a store: metadata, statistics, rows and whole chunks.

Whole-chunk reads go straight to the chunk files when the activations are stored uncompressed (raw bytes plus
a crc32c trailer, the default): one ``readinto`` per chunk and a checksum at 25 GB/s, where zarr-python's own
read path measured 0.16-0.34x of plain file reads on this project's machines. Any other codec falls back to
zarr, so stores written by other tools with compression still read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
import torch
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec

from store import dtypes, truth
from store import format as fmt
from store.background import Deferred
from store.errors import CorruptStoreError, IncompleteStoreError, StoreError, StoreNotFoundError, UnsealedStoreError
from store.layout import (
    ROOT_DOC,
    RowMap,
    array_doc,
    array_doc_problems,
    chunk_coords,
    chunk_key,
    consolidated_docs,
    doc_key,
    expected_array_docs,
    metadata_checksum,
    open_array,
    open_group,
    read_doc,
    read_root,
)
from store.location import StoreLocation
from store.manifest import SEAL, Manifest, chunk_problem, verify_seal
from store.progress import current_progress, read_growth
from store.split import RowSplit, split_rows
from store.stats import Moments, merge_all
from store.truth import GroundTruth

log = logging.getLogger(__name__)

SIZE_KEYS = ("tokens", "n_rows")
BINDING = "binding"
"""The key of a run's recorded store that binds it to the rows it used (``ActivationStore.binding``)."""
BOUND_ARRAYS = (fmt.ACTIVATIONS, fmt.TOKENS)
"""The per-row arrays a run is bound to: what it trained on and evaluates on, and the tokens KL runs the LM on."""
"""Identity keys that say how many rows a store holds, not which: an extended store keeps its rows."""
NO_NEGATIVE_IDS = (fmt.TOKENS, fmt.CONTEXT_IDS, fmt.POSITIONS)
"""Arrays whose fill value (-1) is never a real value: reading it back means a missing or damaged chunk."""


@dataclass
class ActivationStore:
    """An open store (read-only). Use :func:`open_store` to get one."""

    location: StoreLocation
    meta: fmt.StoreMeta
    group: zarr.Group
    n_rows: int
    """Rows that can be read: all of them for a complete store, the written prefix for a partial one."""
    partial: bool = False
    manifest: Manifest | None = None
    """A sealed store's manifest: every chunk read is checked against its entry (None: unsealed, or incomplete)."""
    chunk_set: Deferred | None = None
    """The listing of stray and missing chunks started at open, awaited before the first read (off the open's path:
    listing 2,442 chunks per array costs more than the rest of an open)."""

    def __post_init__(self) -> None:
        self.rows = RowMap.of(self.meta, self.n_rows)
        self._arrays: dict[str, zarr.Array] = {}
        self._truth: GroundTruth | None = None
        self._acts = self.array(fmt.ACTIVATIONS)
        codecs = tuple(self._acts.metadata.codecs)
        self.fast_path = (
            len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and codecs[0].endian is not None
            and codecs[0].endian.value == "little"
            and isinstance(codecs[1], Crc32cCodec)
        )
        self._itemsize = np.dtype(self.meta.storage_dtype).itemsize

    # -- shape ------------------------------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.meta.d_model

    @property
    def chunk_rows(self) -> int:
        return self.meta.chunk_rows

    @property
    def n_chunks(self) -> int:
        return self.rows.n_chunks

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one full activation chunk file (payload plus the 4-byte checksum)."""
        return self.chunk_rows * self.d_model * self._itemsize + 4

    # -- contexts -----------------------------------------------------------------------------------------------
    @property
    def rows_per_context(self) -> int:
        return self.meta.context.rows_per_context

    @property
    def n_contexts(self) -> int:
        """Contexts the readable rows span (the last may be short)."""
        return self.meta.context.n_contexts(self.n_rows)

    def context_of_row(self, row: int) -> int:
        return self.meta.context.context_of_row(row)

    def contexts_between(self, start: int, stop: int) -> range:
        """Contexts with at least one row in [start, stop)."""
        return self.meta.context.contexts_between(start, stop)

    def context_rows(self, c: int) -> tuple[int, int]:
        """Rows [start, stop) of context ``c``, clipped to the store's readable rows."""
        return self.meta.context.context_rows(c, self.n_rows)

    def context_input_ids(self, contexts: Sequence[int], pad_id: int | None = None,
                          end_row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The token ids the LM saw for these contexts, (C, context_length) int64, and their real lengths (C,).

        Position 0 holds BOS, the stored tokens follow from ``first_position``, and a short last context is
        padded with ``pad_id`` (default: the store tokenizer's pad id, else 0). ``end_row`` cuts the contexts
        at that row as if the store ended there: a run recorded against a store that has grown since sees its
        held-out contexts as they were.
        """
        ctx, tok = self.meta.context, self.meta.tokenizer
        pad = (tok.pad_token_id or 0) if pad_id is None else pad_id
        ids_CT = np.full((len(contexts), ctx.length), pad, dtype=np.int64)
        n_real_C = np.zeros(len(contexts), dtype=np.int64)
        if not len(contexts):
            return ids_CT, n_real_C
        bad = [c for c in contexts if not 0 <= c < self.n_contexts]
        if bad:
            raise StoreError(f"context {bad[0]} is outside the store's 0..{self.n_contexts - 1}")
        # One read of the span the contexts cover: token reads decompress whole chunks, so per-context reads
        # would decompress the same chunk again and again.
        end = self.n_rows if end_row is None else min(end_row, self.n_rows)
        span_start = self.context_rows(min(contexts))[0]
        tokens = self.tokens(span_start, max(min(self.context_rows(max(contexts))[1], end), span_start))
        for i, c in enumerate(contexts):
            lo, hi = self.meta.context.context_rows(c, end)
            ids_CT[i, ctx.first_position : ctx.first_position + hi - lo] = tokens[lo - span_start : hi - span_start]
            ids_CT[i, 0] = tok.bos_token_id
            n_real_C[i] = ctx.first_position + hi - lo
        return ids_CT, n_real_C

    def identity(self) -> dict[str, Any]:
        """What a run records of its store, and what decides whether two stores hold the same rows: the
        store's identity (:meth:`StoreMeta.identity`) plus its readable rows and width. JSON-serialisable."""
        return {**self.meta.identity(), "d_model": self.d_model, "n_rows": self.n_rows}

    def recorded_mismatch(self, recorded: dict[str, Any], rows: tuple[int, int]) -> tuple[str, Any, Any] | None:
        """(key, recorded, this store's) for the first way this store is not the one a run recorded
        (``identity()`` then) and whose rows ``rows`` it used, or None.

        A store extended since (``pipeline harvest`` with more ``--tokens``) is still that store: its first rows
        are the ones it held, bit for bit, so only its size may differ, as long as it holds ``rows``.
        """
        have = self.identity()
        for key, want in recorded.items():
            if key in SIZE_KEYS or key == BINDING:
                continue
            if want != have.get(key):
                return key, want, have.get(key)
        if rows[1] > self.n_rows or recorded.get("n_rows", 0) > self.n_rows:
            return "n_rows", recorded.get("n_rows"), self.n_rows
        return None

    def check_positions(self, name: str, start: int, stop: int) -> None:
        """Every chunk of array ``name`` holding rows [start, stop) is the one the manifest records at its position
        (its 4-byte trailer read, no data): what a run trained on is still where it was. Nothing to check unsealed."""
        if self.manifest is None or stop <= start:
            return
        arr = self.array(name)
        coords = [(j,) + (0,) * (arr.ndim - 1) for j in self._chunks_of(name, start, stop)]
        keys = [self.array_chunk_key(name, c[0]) for c in coords]
        for c, key, tail in zip(coords, keys, self.location.read_tails(keys), strict=True):
            problem = chunk_problem(self.location, name, c, key, tail, self.manifest)
            if problem is not None:
                raise CorruptStoreError(problem)

    def binding(self) -> dict[str, Any] | None:
        """What binds a run to the rows it used, as its config.json records them (``store.binding``): the store's
        seal, and the CRC-32C of every activation and token chunk of the readable rows, the last one's over its rows
        only when it is short (a store grown since rewrites that chunk and keeps those rows). None for an unsealed
        store."""
        if self.manifest is None:
            return None
        full, tail = divmod(self.n_rows, self.chunk_rows)
        out: dict[str, Any] = {"manifest_sha256": self.meta.manifest_sha256}
        for name in BOUND_ARRAYS:
            out[name] = {"chunks": self.manifest.arrays[name].crc32c_hex[: 8 * full]}
            if tail:
                lo, hi = self.rows.chunk_bounds(full)
                out[name]["tail"] = [lo, hi, f"{self._rows_crc(name, lo, hi):08x}"]
        return out

    def _rows_crc(self, name: str, lo: int, hi: int) -> int:
        """CRC-32C of the stored bytes of rows [lo, hi) of array ``name``."""
        rows = self.read_rows_raw(lo, hi) if name == fmt.ACTIVATIONS else self.read_array(name, lo, hi)
        return google_crc32c.value(np.ascontiguousarray(rows).view(np.uint8).tobytes())

    def binding_problem(self, recorded: dict[str, Any] | None) -> str | None:
        """How the rows a run recorded (``binding()`` then) differ from this store's, in words, or None when they do
        not: the same seal, or (re-sealed, or grown since) the same chunks where the run's rows were."""
        if recorded is None or self.manifest is None:
            return None  # unsealed when the run trained, or read unsealed now (--allow-unsealed): nothing to bind
        if recorded["manifest_sha256"] == self.meta.manifest_sha256:
            return None
        for name in BOUND_ARRAYS:
            want = recorded[name]["chunks"]
            have = self.manifest.arrays[name].crc32c
            for j in range(len(want) // 8):
                if j >= len(have) or int(want[8 * j : 8 * j + 8], 16) != have[j]:
                    return f"{name} chunk {j} is not the one it trained on"
            if "tail" in recorded[name]:
                lo, hi, crc = recorded[name]["tail"]
                j = lo // self.chunk_rows
                if hi > self.n_rows:
                    return f"rows {lo}..{hi} are no longer all in it"
                if self._rows_crc(name, lo, hi) != int(crc, 16):
                    return f"{name} rows {lo}..{hi} (chunk {j}) are not the ones it trained on"
        return None

    # -- activations ------------------------------------------------------------------------------------------
    def chunk_key(self, j: int) -> str:
        """The activation chunk's key relative to the store root (``activations/c/<j>/0``)."""
        return f"{fmt.ACTIVATIONS}/{self._acts.metadata.encode_chunk_key((j, 0))}"

    def read_chunk_raw(self, j: int) -> np.ndarray:
        """Chunk ``j``'s rows in the stored dtype, shape (rows_in_chunk, d_model)."""
        start, stop = self._chunk_range(j)
        if not self.fast_path:
            return self.read_array(fmt.ACTIVATIONS, start, stop)
        out = np.empty((self.chunk_rows, self.d_model), dtype=self.meta.storage_dtype)
        self._read_full_chunk(j, out)
        return out[: stop - start]

    def read_chunk_into(self, j: int, out: np.ndarray, *, verify_checksum: bool = True) -> None:
        """Read chunk ``j``'s rows into ``out`` (contiguous, shape (rows_in_chunk, d_model)) without a copy.

        ``verify_checksum=False`` skips the crc32c pass (one extra read of the chunk in memory): for hot loops
        over a store that `pipeline store verify` has already checked.
        """
        start, stop = self._chunk_range(j)
        if out.shape != (stop - start, self.d_model) or not out.flags.c_contiguous:
            raise StoreError(f"buffer of shape {out.shape} does not fit chunk {j}")
        if self.fast_path and stop - start == self.chunk_rows:
            self._read_full_chunk(j, out, verify_checksum)
        else:  # a short edge chunk is stored padded to full size
            out[:] = self.read_chunk_raw(j)

    def _chunk_range(self, j: int) -> tuple[int, int]:
        if not 0 <= j < self.n_chunks:
            raise StoreError(f"chunk {j} is outside 0..{self.n_chunks - 1}")
        return self.rows.chunk_bounds(j)

    def _await_chunk_set(self) -> None:
        if self.chunk_set is not None:
            problems, self.chunk_set = self.chunk_set.result(), None
            if problems:
                raise CorruptStoreError(problems[0])

    def _read_full_chunk(self, j: int, out: np.ndarray, verify_checksum: bool = True) -> None:
        self._await_chunk_set()
        key = self.chunk_key(j)
        trailer = np.empty(4, dtype=np.uint8)
        try:
            n = self.location.read_into(key, [memoryview(out), memoryview(trailer)])
        except FileNotFoundError:
            raise CorruptStoreError(
                f"{self.location}: activations chunk {j} ({key}) is missing: re-harvest the store or restore it"
            ) from None
        if n != self.chunk_nbytes:
            raise CorruptStoreError(
                f"{self.location}: activations chunk {j} ({key}) has {n} bytes, expected {self.chunk_nbytes} "
                "(truncated or overwritten): re-harvest the store"
            )
        if verify_checksum and google_crc32c.value(out.reshape(-1).view(np.uint8)) != int(trailer.view("<u4")[0]):
            raise CorruptStoreError(
                f"{self.location}: activations chunk {j} ({key}) fails its checksum (corrupt data): re-harvest the "
                "store"
            )
        if self.manifest is not None:  # the trailer is here anyway: binding the chunk to its position is free
            problem = chunk_problem(self.location, fmt.ACTIVATIONS, (j, 0), key, trailer.tobytes(), self.manifest)
            if problem is not None:
                raise CorruptStoreError(problem)

    def read_rows_raw(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) in the stored dtype."""
        self._check_range(start, stop)
        if not self.fast_path:
            return self.read_array(fmt.ACTIVATIONS, start, stop)
        out = np.empty((stop - start, self.d_model), dtype=self.meta.storage_dtype)
        j0, j1 = start // self.chunk_rows, fmt.ceil_div(stop, self.chunk_rows)
        for j in range(j0, j1):
            c0, c1 = self.rows.chunk_bounds(j)
            lo, hi = max(c0, start), min(c1, stop)
            out[lo - start : hi - start] = self.read_chunk_raw(j)[lo - c0 : hi - c0]
        return out

    def read_rows(self, start: int, stop: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Rows [start, stop) as float32, shape (stop - start, d_model)."""
        return dtypes.decode(self.read_rows_raw(start, stop), self.meta.dtype, device)

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_rows:
            raise StoreError(f"rows [{start}, {stop}) are outside the store's 0..{self.n_rows}")

    # -- per-row metadata -------------------------------------------------------------------------------------
    def tokens(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._rows_of(fmt.TOKENS, start, stop)

    def context_ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._rows_of(fmt.CONTEXT_IDS, start, stop)

    def positions(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._rows_of(fmt.POSITIONS, start, stop)

    def _rows_of(self, name: str, start: int, stop: int | None) -> np.ndarray:
        stop = self.n_rows if stop is None else stop
        self._check_range(start, stop)
        return self.read_array(name, start, stop)

    # -- checked reads of the arrays zarr decodes ---------------------------------------------------------------
    def array(self, name: str) -> zarr.Array:
        """The open zarr array ``name`` (a missing one is one CorruptStoreError line)."""
        if name not in self._arrays:
            self._arrays[name] = open_array(self.location, self.group, name)
        return self._arrays[name]

    def array_chunk_key(self, name: str, j: int) -> str:
        """The key (relative to the store root) of chunk ``j`` along the first axis of array ``name``."""
        arr = self.array(name)
        return f"{name}/{arr.metadata.encode_chunk_key((j,) + (0,) * (arr.ndim - 1))}"

    def read_array(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) along the first axis of array ``name``, with every chunk they touch checked.

        zarr checks each chunk's crc32c but reads a missing chunk as the fill value without a word: that would
        feed token id -1 to the LM or zeros into the normalisation statistics. So a checksum failure is named
        by array and chunk, and any fill value read back is traced to its chunk, which must exist.
        """
        out = self._read_checked(name, start, stop)
        self._check_no_fill(name, out, start)
        return out

    def _read_checked(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) of array ``name``; a chunk failing its checksum, or not the one the manifest
        records at its position, is named."""
        self._await_chunk_set()
        arr = self.array(name)
        try:
            with self.location.translate_unreachable():
                out = np.asarray(arr[start:stop])
        except (ValueError, RuntimeError):  # zarr's crc32c codec raises ValueError on a mismatch or short file
            self._raise_bad_chunk(name, start, stop)
            raise
        self.check_positions(name, start, stop)
        return out

    def _chunks_of(self, name: str, start: int, stop: int) -> range:
        along = self.array(name).chunks[0]
        return range(start // along, fmt.ceil_div(stop, along))

    def _raise_bad_chunk(self, name: str, start: int, stop: int) -> None:
        arr, along = self.array(name), self.array(name).chunks[0]
        for j in self._chunks_of(name, start, stop):
            try:
                arr[max(start, j * along) : min(stop, (j + 1) * along)]
            except (ValueError, RuntimeError):
                raise CorruptStoreError(
                    f"{self.location}: {name} chunk {j} ({self.array_chunk_key(name, j)}) fails its checksum or "
                    "is truncated: re-harvest the store"
                ) from None

    def _check_no_fill(self, name: str, out: np.ndarray, start: int) -> None:
        fill = self.array(name).metadata.fill_value
        is_fill = out == fill
        if out.ndim > 1:
            is_fill = is_fill.all(axis=tuple(range(1, out.ndim)))  # a whole row of fill values
        if not is_fill.any():
            return
        along = self.array(name).chunks[0]
        suspects = sorted({(start + int(i)) // along for i in np.flatnonzero(is_fill)})
        for j in suspects:
            key = self.array_chunk_key(name, j)
            with self.location.translate_unreachable():
                present = self.location.exists(key)
            if not present:
                raise CorruptStoreError(
                    f"{self.location}: {name} chunk {j} ({key}) is missing: re-harvest the store or restore it"
                )
        # Every chunk is there: a fill value stored on purpose is fine, except where no real value can be -1.
        if name in NO_NEGATIVE_IDS:
            j = suspects[0]
            raise CorruptStoreError(
                f"{self.location}: {name} chunk {j} ({self.array_chunk_key(name, j)}) holds the fill value "
                f"{fill} where every row has a value: the chunk is damaged; re-harvest the store"
            )

    # -- ground truth (synthetic stores) ------------------------------------------------------------------------
    @property
    def synthetic(self) -> bool:
        return self.meta.synthetic is not None

    def ground_truth(self) -> GroundTruth:
        """The generative model a synthetic store's rows were sampled from (read once, then kept)."""
        if self.meta.synthetic is None:
            raise StoreError(f"{self.location} holds an LM's activations, not a synthetic model's: it has no ground "
                             "truth (make one with `pipeline synth`)")
        if self._truth is None:
            prefix = f"{truth.GROUP}/"
            arrays = {name.removeprefix(prefix): self._whole(name) for name in expected_array_docs(self.meta)
                      if name.startswith(prefix) and name not in (truth.ROW_FEATURES, truth.ROW_COEFFICIENTS)}
            found = GroundTruth.from_arrays(arrays, str(self.location))
            if found.digest() != self.meta.synthetic.model_digest:
                raise CorruptStoreError(
                    f"{self.location}: the ground truth under {truth.GROUP}/ does not match the model digest recorded "
                    "in its attributes (edited or corrupt): synthesize the store again"
                )
            self._truth = found
        return self._truth

    def _whole(self, name: str) -> np.ndarray:
        arr = self.array(name)
        self._check_chunks_exist(name, 0, arr.shape[0])
        return self._read_checked(name, 0, arr.shape[0])

    def truth_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, stop)'s active true features (int32, padded with -1) and coefficients (float32, padded
        with 0), each (rows, S)."""
        self.ground_truth()
        self._check_range(start, stop)
        self._check_chunks_exist(truth.ROW_FEATURES, start, stop)
        self._check_chunks_exist(truth.ROW_COEFFICIENTS, start, stop)
        return (self._read_checked(truth.ROW_FEATURES, start, stop),
                self._read_checked(truth.ROW_COEFFICIENTS, start, stop))

    def _check_chunks_exist(self, name: str, start: int, stop: int) -> None:
        """Where a fill value is a real value (padding, a row without features), a missing chunk cannot be told by
        its contents: its file must be there. A sealed store's read checks each chunk's trailer against the manifest
        (``check_positions``), which finds a missing one without this extra request per chunk."""
        if self.manifest is not None:
            return
        for j in self._chunks_of(name, start, stop):
            key = self.array_chunk_key(name, j)
            with self.location.translate_unreachable():
                present = self.location.exists(key)
            if not present:
                raise CorruptStoreError(f"{self.location}: {name} chunk {j} ({key}) is missing: the store is damaged; "
                                        "synthesize it again or restore it")

    # -- statistics and splits --------------------------------------------------------------------------------
    def chunk_row_counts(self) -> np.ndarray:
        counts = np.full(self.n_chunks, self.chunk_rows, dtype=np.int64)
        if self.n_chunks:
            counts[-1] = self.n_rows - (self.n_chunks - 1) * self.chunk_rows
        return counts

    def chunk_moments(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-chunk means and M2s (float64, (chunks, D)) of activation chunks [start, stop), checked."""
        stop = self.n_chunks if stop is None else stop
        return self.read_array(fmt.CHUNK_MEAN, start, stop), self.read_array(fmt.CHUNK_M2, start, stop)

    def moments(self) -> Moments:
        """Per-dimension count, mean and M2 (float64) of the readable rows, from the per-chunk statistics."""
        means, m2s = self.chunk_moments()
        return merge_all(self.chunk_row_counts(), means, m2s)

    def split(self, holdout_fraction: float) -> RowSplit:
        return split_rows(self.n_rows, self.meta.context.rows_per_context, holdout_fraction)

    def describe(self) -> str:
        m = self.meta
        return (
            f"{m.model.name} layer {m.layer}, {self.n_rows:,} tokens of {m.dataset.label}, "
            f"ctx {m.context.length}, d_model {m.d_model}"
        )


UNSEALED_HINT = ("seal it with `pipeline store finalize {flag}{url}` (it then records the store as it is now), or "
                 "pass --allow-unsealed to read it unchecked")


def open_store(
    url: str | StoreLocation, *, partial: bool = False, storage_options: dict | None = None,
    allow_unsealed: bool = False, check_chunk_set: bool = True,
) -> ActivationStore:
    """Open a store for reading. An incomplete store raises unless ``partial`` (then its written prefix reads). A
    complete store must be sealed (store/manifest.py): its metadata documents are checked against the manifest
    here, and every chunk read later against its entry; an unsealed one (finalised by an older version) raises
    unless ``allow_unsealed``."""
    location = url if isinstance(url, StoreLocation) else StoreLocation(str(url), storage_options or {})
    try:
        root = read_root(location)
    except FileNotFoundError:
        root = None
    if root is None:
        raise StoreNotFoundError(
            f"no activation store at {location}: check the path, or create one with `pipeline harvest --store`"
        )
    meta = fmt.StoreMeta.from_attrs(root["attributes"], where=f"{location}/{ROOT_DOC}")
    sealed = None
    if meta.complete:
        sealed = _check_seal(location, root, meta, allow_unsealed)
    # Consolidated metadata is used when present; a store whose finalize stopped early still opens.
    group = open_group(location, read_only=True, use_consolidated=None)
    _check_array_metadata(location, root, meta, group, sealed is None)
    if meta.complete:
        store = ActivationStore(location, meta, group, meta.n_rows, manifest=sealed)
        if sealed is not None and check_chunk_set:
            store.chunk_set = Deferred(chunk_set_problems, location, sealed)  # last: nothing of the open waits for it
        return store
    written = written_prefix_rows(location, meta)
    growth = read_growth(location)
    if not partial and growth is not None:
        raise IncompleteStoreError(
            f"{location} is being extended from {growth.from_rows:,} to {meta.n_rows:,} tokens ({written:,} written "
            "so far): wait for that harvest to finish, or rerun it to resume; it reads again once complete"
        )
    if not partial:
        raise IncompleteStoreError(
            f"{location} is incomplete: its harvest has written {written:,} of {meta.n_rows:,} tokens; wait for the "
            "harvest to finish, or rerun it to complete the store"
        )
    if written == 0:
        raise IncompleteStoreError(f"{location} is incomplete and holds no rows yet")
    log.warning("reading the first %d of %d rows of incomplete store %s", written, meta.n_rows, location)
    return ActivationStore(location, meta, group, written, partial=True)


def _check_seal(location: StoreLocation, root: dict, meta: fmt.StoreMeta, allow_unsealed: bool) -> Manifest | None:
    """A complete store's manifest, its metadata documents checked against it; None for an unsealed store read with
    ``allow_unsealed`` (then its format-1 checksum, where it has one, is checked instead)."""
    if meta.manifest_sha256 is not None:
        return verify_seal(location, root)
    if not allow_unsealed:
        why = (f"was finalised by an older version of this tool (store format {meta.format_version}) and carries no "
               "manifest" if meta.format_version < fmt.FORMAT_VERSION else
               f"has lost the seal ({SEAL}) its format version carries (removed or edited since it was finalised)")
        raise UnsealedStoreError(f"{location} {why}, so its metadata and chunks cannot be checked against what was "
                                 "written: " + UNSEALED_HINT.format(
            url=location, flag="" if meta.format_version < fmt.FORMAT_VERSION else "--reseal "))
    consolidated = consolidated_docs(root)
    if meta.metadata_sha256 and consolidated is not None and (
        metadata_checksum(root["attributes"], consolidated) != meta.metadata_sha256
    ):
        raise CorruptStoreError(
            f"{location}/{ROOT_DOC}: its attributes or consolidated metadata do not match the checksum recorded at "
            "finalisation (edited or corrupt): restore the file, or re-harvest"
        )
    return None


def chunk_set_problems(location: StoreLocation, manifest: Manifest, *, deep: bool = False) -> list[str]:
    """Every chunk the manifest records is there, and no other: one line per stray chunk (a copy from another store,
    a chunk beyond an array's shape) and per missing one. Opening lists the first level of each array's chunks (one
    listing per array: a missing inner file is found when it is read); ``deep`` lists every file (`store verify`)."""
    problems = []
    for name, chunks in manifest.arrays.items():
        if not deep:  # the common case, at every open: compare the first level's names as numbers
            found_first = location.listdir(f"{name}/c")
            if found_first == sorted(map(str, range(chunks.grid[0]))) if chunks.grid else not found_first:
                continue
        coords = chunk_coords(chunks.grid)
        if deep:
            expected = {chunk_key(name, c): c for c in coords}
            found = set(location.find(f"{name}/c"))
        else:
            expected = {f"{name}/c/{c[0]}": c for c in coords}
            found = {f"{name}/c/{entry}" for entry in found_first}
        for key in sorted(found - set(expected)):
            if not deep and not location.find(key):
                continue  # an empty folder (a local resize deletes the chunks beyond the shape, not their folders)
            problems.append(f"{location}: {key} is a chunk the store was not sealed with (beyond the shape of "
                            f"'{name}', or copied in): remove it, or re-harvest the store")
        for key, c in expected.items():
            if key not in found:
                j = str(c[0]) if not any(c[1:]) else ",".join(map(str, c))
                problems.append(f"{location}: {name} chunk {j} ({chunk_key(name, c)}) is missing: restore it, or "
                                "re-harvest the store")
    return problems


def _check_array_metadata(location: StoreLocation, root: dict, meta: fmt.StoreMeta, group: zarr.Group,
                          compare_copies: bool) -> None:
    """Refuse arrays whose metadata (as this reader sees it: the consolidated copy once complete) is not what
    the format specifies for these attributes: a shape or chunking edited in place would misplace every row.
    Codecs are not compared here, so that a store recompressed by another tool still reads. ``compare_copies``
    (no manifest to do it): each array's own zarr.json must also equal its consolidated copy in ``root`` (the root
    document as read at open)."""
    expected = expected_array_docs(meta)
    consolidated = group.metadata.consolidated_metadata is not None
    copies = consolidated_docs(root) if compare_copies and consolidated else None
    for name in expected:
        doc = array_doc(open_array(location, group, name))
        # Both the attributes and the consolidated copies live in the root document: a disagreement is its damage.
        where = f"{location}/{ROOT_DOC} (consolidated)" if consolidated else f"{location}/{doc_key(name)}"
        problems = array_doc_problems(name, doc, expected[name], where, shape=meta.complete, codecs=False)
        if problems:
            raise CorruptStoreError(problems[0])
        if copies is not None:
            own = read_doc(location, doc_key(name))
            if own != (copies or {}).get(name):
                raise CorruptStoreError(
                    f"{location}/{doc_key(name)} " + ("is missing" if own is None else
                                                      f"differs from its consolidated copy in {ROOT_DOC}") +
                    ": restore it, or re-harvest the store")


def written_prefix_rows(location: StoreLocation, meta: fmt.StoreMeta) -> int:
    """Rows [0, n) written without a gap, across shards, by the progress files of an unfinished harvest.

    Shard ``s`` writes every ``num_shards``-th chunk from chunk ``s``, in order, so the gap starts at the
    earliest next chunk of any shard; a shard whose documents ran out ends the store there. A store being
    extended holds its old rows whatever the progress files say.
    """
    growth = read_growth(location)
    first_gap = meta.n_chunks
    ends = [meta.n_rows]
    for shard in range(meta.num_shards):
        progress = current_progress(location, meta, shard)
        if progress is None:
            done = 0 if growth is None else growth.chunks_kept(meta, shard)
            first_gap = min(first_gap, shard + done * meta.num_shards)
            continue
        first_gap = min(first_gap, progress.next_chunk)
        if progress.exhausted_at_row is not None:
            ends.append(progress.exhausted_at_row)
    rows = min(first_gap * meta.chunk_rows, *ends)
    return max(rows, 0 if growth is None else growth.from_rows)
