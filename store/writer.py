"""Writing a store: create or resume it, write whole chunks in order, commit progress after each.

The ordering rule that makes this crash-safe is in :mod:`store.progress`; :class:`store.sink.ChunkSink` feeds
a writer from a background thread, and :func:`store.finalize.finalize` completes the store.

A harvest may be split into shards. Shard ``i`` of ``N`` owns a contiguous run of chunks, writes only those,
and keeps its own lock and progress file; the last shard to finish finalizes the store.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import shutil
import time

import numpy as np
import zarr

from store import dtypes
from store import format as fmt
from store.errors import IncompleteStoreError, StoreError, StoreLockedError, StoreMismatchError
from store.finalize import finalize
from store.layout import RowMap, create_or_open_arrays, read_meta, shard_chunk_range
from store.location import StoreLocation
from store.lock import WriterLock
from store.progress import ShardProgress, lock_key, read_progress
from store.stats import moments_of

log = logging.getLogger(__name__)


RESUME_HINTS = {
    "batch_size": "rerun with --batch-size {} to continue it (or use another --store path)",
    "compute_dtype": "rerun with --dtype {} to continue it (or use another --store path)",
    "model_weights": "the model's files changed since this store was started; put the original model back to "
                     "continue it, or pass another --store path",
    "data_content": "the data files changed since this store was started; put the original files back to "
                    "continue it, or pass another --store path",
}
"""For settings that only decide how the rows are computed: how to continue the existing store."""


class StoreWriter:
    """The writer of one shard (the whole store when ``num_shards == 1``).

    Open it with :meth:`open`, write chunks in order with :meth:`write_chunk`, then :meth:`finish`.
    """

    def __init__(self, location: StoreLocation, meta: fmt.StoreMeta, shard: int = 0) -> None:
        if not 0 <= shard < meta.num_shards:
            raise StoreError(f"shard {shard} is outside 0..{meta.num_shards - 1}")
        self.location = location
        self.meta = meta
        self.shard = shard
        self.rows = RowMap.of(meta)
        self._lock = WriterLock(location, lock_key(shard, meta.num_shards))
        self._arrays: dict[str, zarr.Array] = {}
        self.progress: ShardProgress | None = None
        self._opened_at = 0.0
        self._seconds_before = 0.0

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: StoreLocation, meta: fmt.StoreMeta, shard: int = 0) -> StoreWriter:
        """Create the store (or join / resume an existing one with the same identity) and lock this shard."""
        writer = cls(location, meta, shard)
        writer._open()
        return writer

    def _open(self) -> None:
        existing = self._existing_meta()
        if existing is not None and existing.complete:
            self.meta = existing
            self.progress = None
            return
        try:
            self._lock.acquire()
        except OSError as exc:
            raise StoreError(
                f"cannot write to {self.location}: {exc.strerror or exc}; choose a writable --store path"
            ) from exc
        try:
            group = self._create_or_open_group()
            self._arrays = create_or_open_arrays(group, self.meta)
            chunks = shard_chunk_range(self.rows.n_chunks, self.shard, self.meta.num_shards)
            progress = read_progress(self.location, self.shard, self.meta.num_shards)
            if progress is None:
                progress = ShardProgress(self.shard, self.meta.num_shards, chunks.start, chunks.stop)
                self._commit(progress)
            self.progress = progress
            self._seconds_before = progress.seconds
            self._opened_at = time.monotonic()
            self._warn_if_disk_small()
        except BaseException:
            self._lock.release()
            raise

    def _existing_meta(self) -> fmt.StoreMeta | None:
        try:
            existing = read_meta(self.location)
        except PermissionError as exc:
            raise StoreError(f"cannot read {self.location}: {exc.strerror or exc}; choose a writable path") from exc
        except NotADirectoryError as exc:  # a file stands where the store's folder (or a parent) should be
            raise StoreError(f"cannot write to {self.location}: {exc.strerror or exc}; choose a writable --store "
                             "path") from exc
        if existing is None:
            return None
        mismatch = self.meta.first_mismatch(existing)
        if mismatch is not None:
            field, ours, theirs = mismatch
            # Other content under another name reads best as the names; the digests only when the name is the same.
            path_key = {"model_weights": "model", "data_content": "data_files"}.get(field)
            if path_key is not None and self.meta.identity()[path_key] != existing.identity()[path_key]:
                field, ours, theirs = path_key, self.meta.identity()[path_key], existing.identity()[path_key]
            fix = RESUME_HINTS.get(field, "pass another --store path, or delete the old store to replace it")
            raise StoreMismatchError(
                f"{self.location} already holds a store with {fmt.identity_label(field)} = {theirs!r}, but this "
                f"run asks for "
                f"{ours!r}: {fix.format(theirs)}"
            )
        if existing.num_shards != self.meta.num_shards:
            raise StoreMismatchError(
                f"{self.location} is being harvested in {existing.num_shards} shard(s), not "
                f"{self.meta.num_shards}: rerun with --num-shards {existing.num_shards}"
            )
        return existing

    def _create_or_open_group(self) -> zarr.Group:
        store = self.location.zarr_store(read_only=False)
        try:
            return zarr.create_group(store, attributes=self.meta.to_attrs(), overwrite=False)
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError, FileExistsError):
            return zarr.open_group(store, mode="r+", use_consolidated=False)
        except PermissionError as exc:
            raise StoreError(
                f"cannot create a store at {self.location}: {exc.strerror or exc}; choose a writable path"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot create a store at {self.location}: {exc}") from exc

    def _warn_if_disk_small(self) -> None:
        if not self.location.is_local or self.progress is None:
            return
        remaining = self.progress.end_chunk - self.progress.next_chunk
        need = remaining * self.meta.chunk_rows * self.meta.d_model * 2
        parent = self.location.root
        while parent and not self.location.fs.exists(parent):
            parent = parent.rsplit("/", 1)[0]
        free = shutil.disk_usage(parent or "/").free
        if need > free:
            log.warning(
                "the rest of this harvest needs about %.1f GB but only %.1f GB are free on %s",
                need / 1e9, free / 1e9, parent,
            )

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True when there is nothing left for this writer to do (shard finished or store complete)."""
        return self.progress is None or self.progress.finished

    @property
    def next_chunk(self) -> int:
        if self.progress is None:
            raise StoreError("the store is complete; there is nothing to write")
        return self.progress.next_chunk

    @property
    def resume_row(self) -> int:
        """The first row this writer still has to write."""
        return min(self.next_chunk * self.meta.chunk_rows, self.end_row)

    @property
    def end_chunk(self) -> int:
        return self.progress.end_chunk if self.progress is not None else 0

    @property
    def end_row(self) -> int:
        """One past the last row this writer owns."""
        if self.progress is None:
            return 0
        return min(self.progress.end_chunk * self.meta.chunk_rows, self.meta.n_rows)

    # -- writing --------------------------------------------------------------------------------------------
    def write_chunk(self, j: int, acts_raw: np.ndarray, tokens: np.ndarray, *, last: bool = False) -> None:
        """Write chunk ``j`` (its rows' stored activations and token ids), then count it as done.

        ``last`` marks the short final chunk of a data set that ran out: its rows end the store.
        """
        if self.progress is None or j != self.progress.next_chunk or j >= self.progress.end_chunk:
            raise StoreError(f"chunk {j} written out of order (expected {self.next_chunk})")
        if self._lock.lost:
            raise StoreLockedError(
                f"this writer lost its lease on {self.location} to another process: stopping before chunk {j}; "
                "make sure only one process writes each shard"
            )
        start, stop = self.rows.chunk_bounds(j)
        n = len(acts_raw)
        if acts_raw.shape[1:] != (self.meta.d_model,) or tokens.shape != (n,) or not (
            n == stop - start or (last and 0 < n < stop - start)
        ):
            raise StoreError(f"chunk {j} has shape {acts_raw.shape}, expected {(stop - start, self.meta.d_model)}")
        if last:
            self.mark_exhausted(start + n)
        context_ids, positions = self.rows.ids_and_positions(start, start + n)
        moments = moments_of(dtypes.decode_numpy(acts_raw, self.meta.dtype))
        try:
            self._arrays[fmt.ACTIVATIONS][start : start + n] = acts_raw
            self._arrays[fmt.TOKENS][start : start + n] = tokens.astype(np.int32, copy=False)
            self._arrays[fmt.CONTEXT_IDS][start : start + n] = context_ids
            self._arrays[fmt.POSITIONS][start : start + n] = positions
            self._arrays[fmt.CHUNK_MEAN][j] = moments.mean
            self._arrays[fmt.CHUNK_M2][j] = moments.m2
        except OSError as exc:
            raise self._io_error(exc, j) from exc
        self.progress.chunks_done += 1
        self._commit(self.progress)

    def _io_error(self, exc: OSError, j: int) -> StoreError:
        if exc.errno == errno.ENOSPC:
            left = (self.end_chunk - j) * self.meta.chunk_rows * self.meta.d_model * 2
            return StoreError(
                f"disk full while writing chunk {j} of {self.location} (about {left / 1e9:.1f} GB still to "
                "write): free space, then rerun the same command to resume; written chunks are kept"
            )
        return StoreError(f"could not write chunk {j} of {self.location}: {exc}")

    def _commit(self, progress: ShardProgress) -> None:
        if self._opened_at:
            progress.seconds = self._seconds_before + time.monotonic() - self._opened_at
        try:
            self.location.write_bytes_atomic(progress.key, json.dumps(dataclasses.asdict(progress)).encode())
        except OSError as exc:
            raise self._io_error(exc, progress.next_chunk) from exc

    def mark_exhausted(self, row: int) -> None:
        """The data set ended: the store will hold rows [0, row). Rows from ``row`` on are never written."""
        if self.progress is None:
            return
        self.progress.exhausted_at_row = row
        self._commit(self.progress)

    def finish(self) -> bool:
        """Count this shard as finished; finalize the store if every shard is. Returns True if complete."""
        if self.progress is None:
            return True
        exhausted = self.progress.exhausted_at_row
        expected = self.progress.end_chunk if exhausted is None else max(
            min(fmt.n_chunks(exhausted, self.meta.chunk_rows), self.progress.end_chunk), self.progress.first_chunk
        )
        if self.progress.next_chunk < expected:
            raise IncompleteStoreError(
                f"shard {self.shard} stopped at chunk {self.progress.next_chunk} of {expected}: rerun to resume"
            )
        self.progress.finished = True
        self._commit(self.progress)
        # Release first: finalize removes the lock files, and a lease heartbeat must not write one back.
        self.close()
        return finalize(self.location, missing_ok=True)

    def close(self) -> None:
        self._lock.release()
