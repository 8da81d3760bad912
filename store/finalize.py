"""Completing a store once every shard has finished: merged statistics, ``complete: true``, tidy-up.

Crash safety: every step is idempotent and the store is marked complete by ONE atomic write of the root
``zarr.json``, which carries ``complete: true``, the consolidated metadata and the metadata checksum together.
A kill before that write leaves an unfinished store whose shards have all finished: rerunning the harvest (or
`pipeline store finalize`) runs every step again. A kill after it leaves only the writers' bookkeeping
(``_harvest/``), which is not part of the store: the same rerun (finalize on a complete store) removes it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import zarr

from store import format as fmt
from store import manifest
from store.errors import CorruptStoreError, IncompleteStoreError, StoreError
from store.killpoint import kill_point
from store.layout import (
    ROOT_DOC,
    array_specs,
    chunk_coords,
    chunk_grid,
    chunk_key,
    doc_key,
    groups,
    open_group,
    read_doc,
    read_root,
    shard_chunks,
)
from store.location import StoreLocation
from store.progress import Growth, ShardProgress, current_progress, read_growth
from store.stats import Moments, merge_all

log = logging.getLogger(__name__)

STEPS = ("resized", "statistics", "completed", "progress-removed", "tidied")
"""The durable steps of a finalisation, in order; the tests kill the process after each (``finalize:<step>``,
store/killpoint.py)."""
GROWTH_STEPS = ("recorded", "marked", "extended")
"""The durable steps that start extending a complete store (``store.writer``), in order."""


def _step_done(step: str) -> None:
    kill_point("finalize", step)


def finalize(location: StoreLocation, *, missing_ok: bool = False, reseal: bool = False) -> bool:
    """Merge statistics, seal the store with its manifest and mark it complete, once every shard has finished.

    Returns True when the store is complete. With ``missing_ok`` an unfinished shard returns False (the last
    shard to finish calls this); without it, an unfinished shard raises naming it. On a store already complete
    it finishes the tidy-up a killed finalisation may have left undone, seals a store an older version finalised,
    and checks the seal of one sealed already (``reseal``: seal it again as it is now, whatever changed).
    """
    root = read_root(location)
    if root is None:
        raise StoreError(f"no store at {location}")
    meta = fmt.StoreMeta.from_attrs(root["attributes"], where=f"{location}/{ROOT_DOC}")
    if meta.complete:
        if (meta.manifest_sha256 is None and meta.format_version < fmt.FORMAT_VERSION) or reseal:
            _write_root(location, meta.to_attrs())  # finalised by an older version, or re-sealed on purpose
            log.info("sealed %s with a manifest of its metadata and chunks as they are now", location)
        elif meta.manifest_sha256 is None:
            raise CorruptStoreError(
                f"{location}/{ROOT_DOC} lost the seal ({manifest.SEAL}) its format version carries: the store may have "
                "been edited since it was finalised; `pipeline store verify` checks its chunks, and `pipeline store "
                "finalize --reseal` seals it as it is now"
            )
        else:
            try:
                manifest.verify_seal(location, root)
            except CorruptStoreError as exc:
                raise CorruptStoreError(f"{exc} (or, to accept the store as it is now, `pipeline store finalize "
                                        "--reseal`)") from None
        _tidy(location)
        return True
    growth = read_growth(location)
    progresses = [current_progress(location, meta, i) for i in range(meta.num_shards)]
    unfinished = [i for i, p in enumerate(progresses) if not _finished(meta, growth, i, p)]
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
    if growth is not None and n_rows < growth.from_rows:
        raise StoreError(
            f"{location} was being extended from {growth.from_rows:,} rows, but its data set now ends at row "
            f"{n_rows:,}: the data changed since it was harvested; restore it, or harvest into another store"
        )
    group = open_group(location, read_only=False, use_consolidated=False)
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
        # A local resize deletes the chunk files beyond the new shape but not their folders: tidied, so that an open's
        # listing of each array's chunks sees the chunks the store holds and no more.
        for name in (fmt.ACTIVATIONS, fmt.TOKENS, fmt.CONTEXT_IDS, fmt.POSITIONS, fmt.CHUNK_MEAN, fmt.CHUNK_M2):
            for entry in location.listdir(f"{name}/c"):
                if entry.isdigit() and int(entry) >= chunks:
                    location.remove(f"{name}/c/{entry}", recursive=True)
    _step_done("resized")
    counts = np.full(chunks, chunk_rows)
    counts[-1] = n_rows - (chunks - 1) * chunk_rows
    total: Moments = merge_all(counts, *_chunk_statistics(location, group, chunks))
    group[fmt.MEAN][:] = total.mean
    group[fmt.VAR][:] = total.var
    _step_done("statistics")
    attrs = meta.to_attrs()
    attrs.update(
        complete=True,
        n_rows=n_rows,
        # A store being extended carries the seconds of the harvests that made it so far (else 0).
        harvest_seconds=meta.harvest_seconds + max((p.seconds for p in progresses if p is not None), default=0.0),
    )
    _write_root(location, attrs)
    _step_done("completed")
    _tidy(location)
    log.info("store %s is complete: %d rows", location, n_rows)
    return True


def _finished(meta: fmt.StoreMeta, growth: Growth | None, shard: int, progress: ShardProgress | None) -> bool:
    """Whether a shard has written its part: its progress says so, or (no progress yet) the store held all of
    its chunks before it was extended."""
    if progress is not None:
        return progress.finished
    return growth is not None and growth.chunks_kept(meta, shard) == len(shard_chunks(meta.n_chunks, shard,
                                                                                   meta.num_shards))


def _chunk_statistics(location: StoreLocation, group: zarr.Group, chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk's mean and M2, refusing a missing one: zarr would read it as zeros into the global mean."""
    out = []
    for name in (fmt.CHUNK_MEAN, fmt.CHUNK_M2):
        arr = group[name]
        missing = [j for j in range(chunks) if not location.exists(f"{name}/{arr.metadata.encode_chunk_key((j, 0))}")]
        if missing:
            raise CorruptStoreError(
                f"{location}: {name} chunk {missing[0]} is missing although its shard finished: the store is "
                "damaged; re-harvest it"
            )
        try:
            out.append(np.asarray(arr[:chunks]))
        except ValueError as exc:  # crc32c mismatch
            raise CorruptStoreError(f"{location}: a {name} chunk fails its checksum ({exc}): re-harvest") from None
    return out[0], out[1]


def _write_root(location: StoreLocation, attrs: dict) -> None:
    """Seal the store: write its manifest (every node's metadata document and every chunk's CRC-32C by position,
    store/manifest.py), then, in one atomic step, the root zarr.json: the attributes, the consolidated metadata of
    every node the way zarr writes it (so plain zarr opens the store from it), and the manifest's sha256."""
    meta = fmt.StoreMeta.from_attrs(attrs, where=str(location))
    specs = array_specs(meta)
    node_groups = groups(meta)
    if location.is_local:
        # A writer killed inside zarr's write of a local chunk leaves its temporary `<chunk>.<id>.partial` beside it
        # (the chunk itself is written again on resume): not part of what is sealed.
        for name in specs:
            for key in location.find(f"{name}/c"):
                if key.endswith(".partial"):
                    location.remove(key)
    nodes, documents = {}, {}
    for name in sorted([*specs, *node_groups]):
        doc = read_doc(location, doc_key(name))
        if doc is None:
            raise CorruptStoreError(f"{location}/{doc_key(name)} is missing: the store is damaged; re-harvest it")
        documents[doc_key(name)] = manifest.document_digest(doc, doc_key(name))
        if name in node_groups:
            doc = {**doc, "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": {}}}
        nodes[name] = doc
    attrs = {**attrs, "metadata_sha256": None, manifest.SEAL: None, "format_version": fmt.FORMAT_VERSION}
    root = {
        "attributes": attrs,
        "zarr_format": 3,
        "consolidated_metadata": {"kind": "inline", "must_understand": False, "metadata": nodes},
        "node_type": "group",
    }
    documents[ROOT_DOC] = manifest.document_digest(root, ROOT_DOC)
    arrays = {}
    for name, spec in specs.items():
        grid = chunk_grid(spec)
        coords = chunk_coords(grid)
        keys = [chunk_key(name, c) for c in coords]
        tails = location.read_tails(keys)
        missing = [k for k, t in zip(keys, tails, strict=True) if t is None or len(t) != 4]
        if missing:
            raise CorruptStoreError(f"{location}: chunk {missing[0]} is missing or truncated: the store is damaged; "
                                    "re-harvest it")
        arrays[name] = manifest.ArrayChunks.of(grid, [int.from_bytes(t, "little") for t in tails])
    attrs[manifest.SEAL] = manifest.write_manifest(location, manifest.Manifest(documents, arrays))
    location.write_bytes_atomic(ROOT_DOC, json.dumps(root, indent=2).encode())


def _tidy(location: StoreLocation) -> None:
    """Drop the writers' bookkeeping (progress files, then locks) once the store is complete. Idempotent."""
    for name in location.listdir(fmt.WORK_DIR):
        if name.startswith("progress-"):
            location.remove(f"{fmt.WORK_DIR}/{name}")
    _step_done("progress-removed")
    location.remove(fmt.WORK_DIR, recursive=True)
    _step_done("tidied")
