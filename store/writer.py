"""Writing a store: create or resume it, write whole chunks, commit progress, finalize.

Crash safety rests on one ordering rule: a chunk's activations, token ids and statistics are written first,
then the writer's progress file is replaced (atomically) to count the chunk as done. A chunk written but not
counted is simply written again on resume, so kill -9 at any moment loses at most the chunk in flight.

A harvest may be split into shards. Shard ``i`` of ``N`` owns a contiguous run of chunks, writes only those,
and keeps its own lock and progress file; the last shard to finish finalizes the store.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import queue
import shutil
import threading
import time
from dataclasses import dataclass

import numpy as np
import zarr

from store import dtypes
from store import format as fmt
from store.errors import IncompleteStoreError, StoreError, StoreLockedError, StoreMismatchError
from store.layout import RowMap, create_or_open_arrays, shard_chunk_range
from store.location import StoreLocation
from store.lock import WriterLock
from store.stats import Moments, merge_all, moments_of

log = logging.getLogger(__name__)


RESUME_HINTS = {
    "batch size": "rerun with --batch-size {} to continue it (or use another --store path)",
    "compute dtype": "rerun with --dtype {} to continue it (or use another --store path)",
}
"""For settings that only decide how the rows are computed: how to continue the existing store."""


@dataclass
class ShardProgress:
    """What one writer has committed; replaced atomically after every chunk."""

    shard: int
    num_shards: int
    first_chunk: int
    end_chunk: int
    chunks_done: int = 0
    """Chunks first_chunk .. first_chunk + chunks_done - 1 are written and counted."""
    finished: bool = False
    exhausted_at_row: int | None = None
    """Set when the data set ran out: the store ends at this row."""
    seconds: float = 0.0
    """Wall-clock seconds spent writing, summed over resumed runs."""

    @property
    def key(self) -> str:
        return progress_key(self.shard, self.num_shards)

    @property
    def next_chunk(self) -> int:
        return self.first_chunk + self.chunks_done


def progress_key(shard: int, num_shards: int) -> str:
    return f"{fmt.WORK_DIR}/progress-{shard:05d}-of-{num_shards:05d}.json"


def lock_key(shard: int, num_shards: int) -> str:
    return f"{fmt.WORK_DIR}/writer-{shard:05d}-of-{num_shards:05d}.lock"


def read_meta(location: StoreLocation) -> fmt.StoreMeta | None:
    """The store's attributes, or None when nothing is at the location yet."""
    if not location.exists("zarr.json"):
        return None
    group = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
    return fmt.StoreMeta.from_attrs(dict(group.attrs), where=str(location))


def read_progress(location: StoreLocation, shard: int, num_shards: int) -> ShardProgress | None:
    try:
        return ShardProgress(**json.loads(location.read_bytes(progress_key(shard, num_shards))))
    except FileNotFoundError:
        return None


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
        if existing is None:
            return None
        mismatch = self.meta.first_mismatch(existing)
        if mismatch is not None:
            field, ours, theirs = mismatch
            fix = RESUME_HINTS.get(field, "pass another --store path, or delete the old store to replace it")
            raise StoreMismatchError(
                f"{self.location} already holds a store with {field} = {theirs!r}, but this run asks for "
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


class ChunkSink:
    """Background writer: accepts blocks of consecutive rows, assembles whole chunks, writes them.

    ``put`` returns at once unless ``max_pending`` blocks wait, which bounds memory; an error in the writer
    thread surfaces on the next ``put`` or on ``close``.
    """

    def __init__(self, writer: StoreWriter, max_pending: int = 8) -> None:
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._row = writer.resume_row
        self._acts: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._buffered = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self.rows_written = 0

    def put(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray) -> None:
        """Queue rows [start_row, start_row + len) ; blocks must arrive in order, without gaps."""
        self._raise_if_failed()
        self._queue.put((start_row, acts_raw, tokens))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                self._absorb(*item)
        except BaseException as exc:  # handed to the producer thread
            self._error = exc
            while self._queue.get() is not None:  # drain so the producer never blocks forever
                pass

    def _absorb(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray) -> None:
        expected = self._row + self._buffered
        if start_row != expected:
            raise StoreError(f"rows arrived out of order: got row {start_row}, expected {expected}")
        self._acts.append(acts_raw)
        self._tokens.append(tokens)
        self._buffered += len(acts_raw)
        while self._buffered and self.writer.next_chunk < self.writer.end_chunk:
            start, stop = self.writer.rows.chunk_bounds(self.writer.next_chunk)
            if self._buffered < stop - start:
                break
            acts = np.concatenate(self._acts) if len(self._acts) > 1 else self._acts[0]
            toks = np.concatenate(self._tokens) if len(self._tokens) > 1 else self._tokens[0]
            n = stop - start
            self.writer.write_chunk(self.writer.next_chunk, acts[:n], toks[:n])
            self.rows_written += n
            self._acts, self._tokens = ([acts[n:]], [toks[n:]]) if len(acts) > n else ([], [])
            self._row, self._buffered = stop, self._buffered - n

    def flush_partial(self) -> int:
        """After the data set ran out: write the rows buffered so far as the store's last, short chunk.

        Returns the row at which the store now ends.
        """
        self.close()
        end = self._row + self._buffered
        if self._buffered:
            acts, toks = np.concatenate(self._acts), np.concatenate(self._tokens)
            self.writer.write_chunk(self.writer.next_chunk, acts, toks, last=True)
            self.rows_written += len(acts)
            self._acts, self._tokens, self._row, self._buffered = [], [], end, 0
        else:
            self.writer.mark_exhausted(end)
        return end

    def close(self) -> None:
        """Wait until every queued row is written (a partial last chunk stays buffered)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()


def finalize(location: StoreLocation, *, missing_ok: bool = False) -> bool:
    """Merge statistics and mark the store complete, once every shard has finished.

    Returns True when the store is complete. With ``missing_ok`` an unfinished shard returns False (the last
    shard to finish calls this); without it, an unfinished shard raises naming it.
    """
    meta = read_meta(location)
    if meta is None:
        raise StoreError(f"no store at {location}")
    if meta.complete:
        _tidy(location)  # repairs a finalize that stopped after marking the store complete
        return True
    progresses = [read_progress(location, i, meta.num_shards) for i in range(meta.num_shards)]
    unfinished = [i for i, p in enumerate(progresses) if p is None or not p.finished]
    if unfinished:
        if missing_ok:
            return False
        raise IncompleteStoreError(
            f"{location}: shard(s) {', '.join(map(str, unfinished[:10]))} of {meta.num_shards} have not "
            "finished: run (or rerun) them, then finalize again"
        )
    exhausted = [p.exhausted_at_row for p in progresses if p is not None and p.exhausted_at_row is not None]
    n_rows = min([meta.n_rows, *exhausted])
    if n_rows == 0:
        raise StoreError(
            f"the data set gave no tokens, so {location} is empty: check the data set, split and text field"
        )
    group = zarr.open_group(location.zarr_store(read_only=False), mode="r+", use_consolidated=False)
    chunk_rows = meta.chunk_rows
    chunks = fmt.n_chunks(n_rows, chunk_rows)
    if n_rows < meta.n_rows:
        log.warning("the data set ran out: %s holds %d tokens, not the %d asked for", location, n_rows, meta.n_rows)
        for name in (fmt.ACTIVATIONS, fmt.TOKENS, fmt.CONTEXT_IDS, fmt.POSITIONS):
            arr = group[name]
            arr.resize((n_rows, *arr.shape[1:]))
        for name in (fmt.CHUNK_MEAN, fmt.CHUNK_M2):
            arr = group[name]
            arr.resize((chunks, arr.shape[1]))
    counts = np.full(chunks, chunk_rows)
    counts[-1] = n_rows - (chunks - 1) * chunk_rows
    total: Moments = merge_all(counts, group[fmt.CHUNK_MEAN][:], group[fmt.CHUNK_M2][:])
    group[fmt.MEAN][:] = total.mean
    group[fmt.VAR][:] = total.var
    attrs = meta.to_attrs()
    attrs.update(
        complete=True,
        n_rows=n_rows,
        harvest_seconds=max((p.seconds for p in progresses if p is not None), default=0.0),
    )
    group.attrs.update(attrs)
    _tidy(location)
    log.info("store %s is complete: %d rows", location, n_rows)
    return True


def _tidy(location: StoreLocation) -> None:
    """The steps after `complete: true`: consolidate the metadata, drop the writers' bookkeeping. Idempotent."""
    if b"consolidated_metadata" not in location.read_bytes("zarr.json"):
        zarr.consolidate_metadata(location.zarr_store(read_only=False))
    location.remove(fmt.WORK_DIR, recursive=True)
