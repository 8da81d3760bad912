"""Writing a store: create or resume it, write whole chunks in order, commit progress after each.

The ordering rule that makes this crash-safe is in :mod:`store.progress`; :class:`store.sink.ChunkSink` feeds
a writer from a background thread, and :func:`store.finalize.finalize` completes the store.

A harvest may be split into shards. Shard ``i`` of ``N`` owns every N-th chunk from chunk ``i``
(``store.layout.shard_chunks``), writes only those, in order, and keeps its own lock and progress file; the last
shard to finish finalizes the store. A writer counts in its own rows (``StoreWriter.rows``: its chunks end to
end), which are the store's rows when there is one shard.

A complete store opened for more tokens than it holds is extended (``StoreWriter._start_growth``): its rows stay
as they are, the new ones are written after them, and it is complete again once every shard has finished.
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

from store import dtypes, truth
from store import format as fmt
from store.errors import IncompleteStoreError, StoreError, StoreLockedError, StoreMismatchError, StoreNotFoundError
from store.finalize import finalize
from store.killpoint import kill_point
from store.layout import ROOT_DOC, RowMap, ShardRows, array_shape, create_or_open_arrays, read_meta, shard_chunks
from store.location import StoreLocation
from store.lock import WriterLock
from store.progress import (
    Growth,
    ShardProgress,
    current_progress,
    lock_key,
    read_growth,
    read_progress,
    write_growth,
)
from store.stats import Moments, moments_of

log = logging.getLogger(__name__)


RESUME_HINTS = {
    "batch_size": "rerun with --batch-size {} to continue it (or use another --store path)",
    "compute_dtype": "rerun with --dtype {} to continue it (or use another --store path)",
    "model_weights": "the model's files changed since this store was started; put the original model back to "
                     "continue it, or pass another --store path",
    "data_content": "the data files changed since this store was started; put the original files back to "
                    "continue it, or pass another --store path",
    "tokens": "rerun with --tokens {} to finish it first (a complete store can then be extended with a larger "
              "--tokens), or pass another --store path",
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
        self.shard = shard
        self._use_meta(meta)
        self._growth: Growth | None = None
        self._lock = WriterLock(location, lock_key(shard, meta.num_shards))
        self._arrays: dict[str, zarr.Array] = {}
        self.progress: ShardProgress | None = None
        self._opened_at = 0.0
        self._seconds_before = 0.0

    def _use_meta(self, meta: fmt.StoreMeta) -> None:
        self.meta = meta
        self.store_rows = RowMap.of(meta)
        """The store's rows: which context and position each holds."""
        self.shard_rows = ShardRows.of(meta, self.shard)
        self.rows = RowMap(self.shard_rows.n_local, meta.chunk_rows, meta.context)
        """This shard's rows, in the order it writes them: what the sink and the harvest loop count in."""

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: StoreLocation, meta: fmt.StoreMeta, shard: int = 0) -> StoreWriter:
        """Create the store (or join / resume an existing one with the same identity) and lock this shard."""
        writer = cls(location, meta, shard)
        writer._open()
        return writer

    def _open(self) -> None:
        existing = self._existing_meta()
        if existing is not None and existing.complete and not self._grows(existing):
            self._use_meta(existing)
            self.progress = None
            return
        try:
            self._lock.acquire()
        except OSError as exc:
            raise StoreError(
                f"cannot write to {self.location}: {exc.strerror or exc}; choose a writable --store path"
            ) from exc
        try:
            if existing is not None and existing.complete:
                existing = self._existing_meta()  # again under the lock: another run may have extended it meanwhile
                if existing is not None and existing.complete:
                    if not self._grows(existing):
                        self._lock.release()
                        self._use_meta(existing)
                        self.progress = None
                        return
                    self._start_growth(existing)
            if existing is not None:
                self._growth = read_growth(self.location)
            group = self._create_or_open_group()
            self._arrays = create_or_open_arrays(group, self.meta)
            progress = self._shard_progress()
            if self._growth is not None and not progress.finished:
                self._extend_arrays()
                kill_point("grow", "extended")
            self.progress = progress
            self._seconds_before = progress.seconds
            self._opened_at = time.monotonic()
            self._warn_if_disk_small()
        except BaseException:
            self._lock.release()
            raise

    def _shard_progress(self) -> ShardProgress:
        """This shard's progress file, or a new one: at its first chunk, or past the chunks a store being extended
        already held whole."""
        found = read_progress(self.location, self.shard, self.meta.num_shards)
        if found is not None and found.num_shards > 1 and found.stride != found.num_shards:
            raise StoreMismatchError(
                f"{self.location} was started in {found.num_shards} shards by an earlier version of this tool, which "
                "gave each shard a run of chunks: finish it with that version, or harvest into another --store path"
            )
        progress = current_progress(self.location, self.meta, self.shard)
        if progress is None:  # none yet, or one left by the harvest that completed the store before it grew
            kept = 0 if self._growth is None else self._growth.chunks_kept(self.meta, self.shard)
            progress = ShardProgress(self.shard, self.meta.num_shards, first_chunk=self.shard,
                                     end_chunk=self.meta.n_chunks, stride=self.meta.num_shards, chunks_done=kept,
                                     n_rows=self.meta.n_rows)
            self._commit(progress)
        return progress

    # -- growing a complete store --------------------------------------------------------------------------------
    def _grows(self, existing: fmt.StoreMeta) -> bool:
        """Whether this run extends the complete store ``existing`` (its identity already matches but for the
        tokens); refuses what cannot be extended."""
        ours, theirs = self.meta.tokens_requested, existing.tokens_requested
        if ours == theirs:
            return False
        if ours < theirs:
            raise StoreMismatchError(
                f"{self.location} already holds a complete store of {theirs:,} tokens, and a store never shrinks: "
                f"rerun with --tokens {theirs} (or more, to extend it), or pass another --store path"
            )
        if existing.n_rows < theirs:
            raise StoreMismatchError(
                f"{self.location} cannot grow to {ours:,} tokens: its data set ran out at {existing.n_rows:,}, so it "
                "already holds all of its text; harvest other data into another --store path"
            )
        return True

    def _start_growth(self, existing: fmt.StoreMeta) -> None:
        """Mark the complete store ``existing`` as being extended to this run's tokens.

        First ``_harvest/growth.json`` records the rows it holds, then one atomic write of the root turns it into
        an unfinished store of the new size (so readers refuse it, in one line, until it is complete again). Each
        step is idempotent: a run killed anywhere in between starts the same way again.
        """
        growth = Growth(existing.n_rows, existing.tokens_requested, self.meta.tokens_requested)
        found = read_growth(self.location)
        # A growth.json of the size the store already has is bookkeeping a killed tidy-up left behind; one of
        # another size, from a shard that has started (or a run that stopped) before marking the store: with one
        # shard it can only be the latter.
        if (found is not None and found != growth and found.to_tokens != existing.tokens_requested
                and self.meta.num_shards > 1):
            raise StoreMismatchError(
                f"{self.location} is being extended to {found.to_tokens:,} tokens (by another shard, or a run that "
                f"stopped): rerun every shard with --tokens {found.to_tokens}"
            )
        if found != growth:
            write_growth(self.location, growth)
        kill_point("grow", "recorded")
        attrs = existing.to_attrs()
        attrs.update(complete=False, n_rows=growth.to_tokens, tokens_requested=growth.to_tokens,
                     metadata_sha256=None, manifest_sha256=None, harvest_config=self.meta.harvest_config)
        root = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
        self.location.write_bytes_atomic(ROOT_DOC, json.dumps(root, indent=2).encode())
        kill_point("grow", "marked")
        log.info("extending %s from %d to %d tokens", self.location, growth.from_rows, growth.to_tokens)

    def _extend_arrays(self) -> None:
        """Grow every array to this store's size (idempotent; growing never touches a chunk)."""
        for name, arr in self._arrays.items():
            shape = array_shape(self.meta, name)
            if arr.shape[0] < shape[0]:
                arr.resize(shape)

    def _keep_stored_rows(self, j: int, acts_raw: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Store chunk ``j``'s activations with the rows the store held before it was extended kept as stored.

        The chunk that held the old last row is written again with the new rows after it; its old rows are read
        back rather than recomputed, so they stay bit for bit whatever hardware recomputed them. Returns the
        rows to store: ``acts_raw`` itself when it holds them already (every other chunk, or the same floats
        recomputed), else a copy with the stored rows in place, whose statistics must then be computed anew.
        """
        start = j * self.meta.chunk_rows
        if self._growth is None or not start < self._growth.from_rows < start + len(acts_raw):
            return acts_raw
        end = self._growth.from_rows
        stored = np.asarray(self._arrays[fmt.TOKENS][start:end])
        if not np.array_equal(stored, tokens[: end - start]):
            row = start + int(np.flatnonzero(stored != tokens[: end - start])[0])
            raise StoreError(
                f"cannot extend {self.location}: the data set's text changed since it was harvested (row {row} held "
                "another token then); harvest into another --store path"
            )
        stored_acts = np.asarray(self._arrays[fmt.ACTIVATIONS][start:end])
        if np.array_equal(stored_acts, acts_raw[: end - start]):  # recomputed exactly (the same hardware)
            return acts_raw
        acts_raw = acts_raw.copy()
        acts_raw[: end - start] = stored_acts
        return acts_raw

    def _existing_meta(self) -> fmt.StoreMeta | None:
        try:
            existing = read_meta(self.location)
        except StoreNotFoundError:  # a file stands where the store's folder (or a parent) should be
            raise StoreError(f"cannot write to {self.location}: a file stands where its folder should be; choose a "
                             "writable --store path") from None
        if existing is None:
            return None
        # A complete store asked for more tokens grows (``_grows``); an unfinished one must first be finished.
        mismatch = self.meta.first_mismatch(existing, ignore=("tokens",) if existing.complete else ())
        if mismatch is not None:
            field, ours, theirs = mismatch
            # Other content under another name reads best as the names; the digests only when the name is the same.
            path_key = {"model_weights": "model", "data_content": "data_files"}.get(field)
            if path_key is not None and self.meta.identity()[path_key] != existing.identity()[path_key]:
                field, ours, theirs = path_key, self.meta.identity()[path_key], existing.identity()[path_key]
            if field == "dataset":  # the loaders' names (json, text) say less than what was given
                ours, theirs = self.meta.dataset.label, existing.dataset.label
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
        remaining = self.end_chunk - self.next_chunk
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
        """The next of this shard's chunks to write (counting this shard's chunks only, like ``rows``)."""
        if self.progress is None:
            raise StoreError("the store is complete; there is nothing to write")
        return self.progress.chunks_done

    @property
    def resume_row(self) -> int:
        """The first of this shard's rows it still has to write."""
        return min(self.next_chunk * self.meta.chunk_rows, self.end_row)

    @property
    def end_chunk(self) -> int:
        """How many chunks this shard writes."""
        return len(self.shard_rows.chunks) if self.progress is not None else 0

    @property
    def end_row(self) -> int:
        """One past the last row this shard owns (in its own rows)."""
        return self.rows.n_rows if self.progress is not None else 0

    # -- writing --------------------------------------------------------------------------------------------
    def write_truth(self, arrays: dict[str, np.ndarray]) -> None:
        """Write a synthetic store's model (``GroundTruth.arrays()``); idempotent, so every run that writes chunks
        writes it first, and a run killed halfway through it writes it whole again."""
        if self.meta.synthetic is None:
            raise StoreError(f"{self.location} is not a synthetic store: it holds no ground truth")
        try:
            for name, values in arrays.items():
                self._arrays[f"{truth.GROUP}/{name}"][...] = values
        except KeyError as exc:
            raise StoreError(f"the ground truth has an array the format does not specify: {exc}") from None
        except OSError as exc:
            raise self._io_error(exc, self.next_chunk) from exc

    def write_chunk(self, k: int, acts_raw: np.ndarray, tokens: np.ndarray, *, last: bool = False,
                    moments: Moments | None = None,
                    truth_rows: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Write this shard's chunk ``k`` (its rows' stored activations and token ids), then count it as done.

        ``k`` counts this shard's chunks, as ``rows`` does (with one shard it is the store's chunk index).
        ``last`` marks the short final chunk of a data set that ran out: its rows end the store. ``moments`` are
        the statistics of exactly these stored values when the caller has them (the harvest computes them on its
        device); without them they are computed here, from the rows, in numpy. ``truth_rows``: a synthetic
        store's (active features, coefficients) of these rows, padded to its slots.
        """
        if (truth_rows is None) != (self.meta.synthetic is None):
            raise StoreError("a synthetic store's chunks need their rows' ground truth, and only theirs")
        if self.progress is None or k != self.next_chunk or k >= self.end_chunk:
            raise StoreError(f"chunk {k} written out of order (expected {self.next_chunk})")
        j = self.shard_rows.chunks[k]
        if self._lock.lost:
            raise StoreLockedError(
                f"this writer lost its lease on {self.location} to another process: stopping before chunk {j}; "
                "make sure only one process writes each shard"
            )
        lo, hi = self.rows.chunk_bounds(k)
        n = len(acts_raw)
        if acts_raw.shape[1:] != (self.meta.d_model,) or tokens.shape != (n,) or not (
            n == hi - lo or (last and 0 < n < hi - lo)
        ):
            raise StoreError(f"chunk {j} has shape {acts_raw.shape}, expected {(hi - lo, self.meta.d_model)}")
        if last:
            self.mark_exhausted(lo + n)
        start = j * self.meta.chunk_rows
        kept = self._keep_stored_rows(j, acts_raw, tokens)  # before the statistics: they are of stored rows
        if moments is not None and moments.count != n:
            raise StoreError(f"chunk {j} came with statistics of {moments.count} rows, not its {n}")
        if moments is None or kept is not acts_raw:  # rows read back from the store were not in the given ones
            moments = moments_of(dtypes.decode_numpy(kept, self.meta.dtype))
        acts_raw = kept
        context_ids, positions = self.store_rows.ids_and_positions(start, start + n)
        try:
            self._arrays[fmt.ACTIVATIONS][start : start + n] = acts_raw
            self._arrays[fmt.TOKENS][start : start + n] = tokens.astype(np.int32, copy=False)
            self._arrays[fmt.CONTEXT_IDS][start : start + n] = context_ids
            self._arrays[fmt.POSITIONS][start : start + n] = positions
            self._arrays[fmt.CHUNK_MEAN][j] = moments.mean
            self._arrays[fmt.CHUNK_M2][j] = moments.m2
            if truth_rows is not None:
                self._arrays[truth.ROW_FEATURES][start : start + n] = truth_rows[0]
                self._arrays[truth.ROW_COEFFICIENTS][start : start + n] = truth_rows[1]
        except OSError as exc:
            raise self._io_error(exc, k) from exc
        self.progress.chunks_done += 1
        self._commit(self.progress)

    def _io_error(self, exc: OSError, k: int) -> StoreError:
        """One line for a failed write of this shard's chunk ``k``, naming the store's chunk."""
        j = self.shard_rows.chunks[k] if k < len(self.shard_rows.chunks) else self.meta.n_chunks
        if exc.errno == errno.ENOSPC:
            left = (self.end_chunk - k) * self.meta.chunk_rows * self.meta.d_model * 2
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
            raise self._io_error(exc, progress.chunks_done) from exc

    def mark_exhausted(self, row: int) -> None:
        """This shard's documents ended at its row ``row``: the store ends at the matching store row at the latest
        (at the first row any shard could not fill). This shard's rows from ``row`` on are never written."""
        if self.progress is None:
            return
        self.progress.exhausted_at_row = self.shard_rows.store_row(row)
        self._commit(self.progress)

    def finish(self) -> bool:
        """Count this shard as finished; finalize the store if every shard is. Returns True if complete."""
        if self.progress is None:
            return True
        exhausted = self.progress.exhausted_at_row
        # When its documents ran out, the shard's chunks up to the one holding that row.
        last = self.meta.n_chunks if exhausted is None else min(fmt.n_chunks(exhausted, self.meta.chunk_rows),
                                                                  self.meta.n_chunks)
        expected = len(shard_chunks(last, self.shard, self.meta.num_shards))
        if self.next_chunk < expected:
            raise IncompleteStoreError(
                f"shard {self.shard} stopped at chunk {self.progress.next_chunk} of {self.meta.n_chunks}: rerun to "
                "resume"
            )
        self.progress.finished = True
        self._commit(self.progress)
        # Release first: finalize removes the lock files, and a lease heartbeat must not write one back.
        self.close()
        return finalize(self.location, missing_ok=True)

    def close(self) -> None:
        self._lock.release()
