"""Completing a store once every shard has finished: merged statistics, ``complete: true``, tidy-up."""

from __future__ import annotations

import logging

import numpy as np
import zarr

from store import format as fmt
from store.errors import IncompleteStoreError, StoreError
from store.layout import read_meta
from store.location import StoreLocation
from store.progress import read_progress
from store.stats import Moments, merge_all

log = logging.getLogger(__name__)


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
