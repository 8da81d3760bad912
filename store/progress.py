"""A writer's bookkeeping while a harvest runs: one progress file (and one lock) per shard, under WORK_DIR.

Crash safety rests on one ordering rule: a chunk's activations, token ids and statistics are written first,
then the writer's progress file is replaced (atomically) to count the chunk as done. A chunk written but not
counted is simply written again on resume, so kill -9 at any moment loses at most the chunk in flight.

While a complete store is being extended to more tokens, ``growth.json`` says from how many rows (see
:class:`Growth`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from store import format as fmt
from store.errors import CorruptStoreError
from store.layout import shard_chunks
from store.location import StoreLocation

GROWTH_KEY = f"{fmt.WORK_DIR}/growth.json"


@dataclass
class ShardProgress:
    """What one writer has committed; replaced atomically after every chunk.

    The shard writes chunks ``first_chunk, first_chunk + stride, ...`` below ``end_chunk``, in that order (chunks
    are dealt round-robin to shards: ``store.layout.shard_chunks``).
    """

    shard: int
    num_shards: int
    first_chunk: int
    end_chunk: int
    chunks_done: int = 0
    """The shard's first ``chunks_done`` chunks are written and counted."""
    finished: bool = False
    exhausted_at_row: int | None = None
    """Set when the shard's documents ran out: the store ends at this row at the latest."""
    seconds: float = 0.0
    """Wall-clock seconds spent writing, summed over resumed runs."""
    stride: int = 1
    """Chunks between two of this shard's chunks (= num_shards). Files written before sharded stores dealt chunks
    round-robin lack it: they read as 1."""
    n_rows: int | None = None
    """The rows of the store this file counts chunks of (None in files written before stores could grow)."""

    @property
    def key(self) -> str:
        return progress_key(self.shard, self.num_shards)

    @property
    def next_chunk(self) -> int:
        """The store chunk this shard writes next."""
        return self.first_chunk + self.chunks_done * self.stride

    def matches(self, shard: int, meta: fmt.StoreMeta) -> bool:
        """Whether this file describes shard ``shard``'s chunks of the store ``meta`` as it is now (a file left by
        the harvest that completed a store extended since describes a smaller one)."""
        return (self.first_chunk, self.stride, self.end_chunk) == (shard, meta.num_shards, meta.n_chunks) and (
            self.n_rows in (None, meta.n_rows))


def progress_key(shard: int, num_shards: int) -> str:
    return f"{fmt.WORK_DIR}/progress-{shard:05d}-of-{num_shards:05d}.json"


def lock_key(shard: int, num_shards: int) -> str:
    return f"{fmt.WORK_DIR}/writer-{shard:05d}-of-{num_shards:05d}.lock"


def read_progress(location: StoreLocation, shard: int, num_shards: int) -> ShardProgress | None:
    try:
        return ShardProgress(**json.loads(location.read_bytes(progress_key(shard, num_shards))))
    except FileNotFoundError:
        return None


def current_progress(location: StoreLocation, meta: fmt.StoreMeta, shard: int) -> ShardProgress | None:
    """Shard ``shard``'s progress file if it describes the store as it is now (see ``ShardProgress.matches``)."""
    progress = read_progress(location, shard, meta.num_shards)
    if progress is None or not progress.matches(shard, meta):
        return None
    return progress


@dataclass(frozen=True)
class Growth:
    """A complete store being extended: the rows and tokens it held when complete, and the tokens it grows to.

    Written before the store's root is marked incomplete and removed with the rest of ``_harvest/`` once it is
    complete again. Rows below ``from_rows`` are never rewritten: they stay as they were, bit for bit.
    """

    from_rows: int
    from_tokens: int
    to_tokens: int

    def chunks_kept(self, meta: fmt.StoreMeta, shard: int) -> int:
        """How many of shard ``shard``'s chunks the store held whole before it grew: its first chunks to write
        are the ones after them (the chunk holding the old last row is written again, its old rows kept)."""
        return len(shard_chunks(self.from_rows // meta.chunk_rows, shard, meta.num_shards))


def read_growth(location: StoreLocation) -> Growth | None:
    try:
        raw = location.read_bytes(GROWTH_KEY)
    except FileNotFoundError:
        return None
    try:
        return Growth(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise CorruptStoreError(
            f"{location}/{GROWTH_KEY} is damaged ({exc}): the extension of the store cannot resume; restore the "
            "file or harvest a new store"
        ) from None


def write_growth(location: StoreLocation, growth: Growth) -> None:
    location.write_bytes_atomic(GROWTH_KEY, json.dumps(dataclasses.asdict(growth)).encode())
