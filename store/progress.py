"""A writer's bookkeeping while a harvest runs: one progress file (and one lock) per shard, under WORK_DIR.

Crash safety rests on one ordering rule: a chunk's activations, token ids and statistics are written first,
then the writer's progress file is replaced (atomically) to count the chunk as done. A chunk written but not
counted is simply written again on resume, so kill -9 at any moment loses at most the chunk in flight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from store import format as fmt
from store.location import StoreLocation


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


def read_progress(location: StoreLocation, shard: int, num_shards: int) -> ShardProgress | None:
    try:
        return ShardProgress(**json.loads(location.read_bytes(progress_key(shard, num_shards))))
    except FileNotFoundError:
        return None
