"""Which chunks and rows a shard owns, what a partial read of a sharded store sees, and the refusals that keep a
sharded store's chunks made of whole contexts."""

import json

import numpy as np
import pytest
from direct_store import make_meta, random_rows

from store import dtypes
from store.errors import StoreError, StoreMismatchError
from store.format import ContextInfo
from store.layout import ShardRows, harvest_chunk_rows, shard_chunks
from store.location import StoreLocation
from store.reader import open_store
from store.sink import ChunkSink
from store.writer import StoreWriter


def test_chunks_are_dealt_round_robin_and_a_shard_counts_in_its_own_rows():
    assert [list(shard_chunks(7, s, 3)) for s in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    # 7 chunks of 100 rows, the last one short (650 rows): shard 0 owns it
    meta = make_meta(n_rows=650, chunk_rows=100, num_shards=3)
    rows = [ShardRows.of(meta, s) for s in range(3)]
    assert [r.n_local for r in rows] == [250, 200, 200]
    assert [rows[0].store_row(r) for r in (0, 99, 100, 249)] == [0, 99, 300, 649]
    assert [rows[2].store_row(r) for r in (0, 150)] == [200, 550]
    # with one shard, its rows are the store's
    one = ShardRows.of(make_meta(n_rows=650, chunk_rows=100), 0)
    assert one.n_local == 650 and all(one.store_row(r) == r for r in (0, 99, 100, 649))


def test_a_sharded_harvest_picks_or_demands_chunks_of_whole_contexts():
    ctx = ContextInfo(128, False)  # 127 rows per context
    assert harvest_chunk_rows(None, 2304, ctx, 1) == 4096  # one shard: as before
    assert harvest_chunk_rows(None, 2304, ctx, 8) == 32 * 127
    assert harvest_chunk_rows(127 * 3, 2304, ctx, 8) == 381
    with pytest.raises(StoreError, match="--chunk-rows 4096 is not a multiple of the 127 rows per context"):
        harvest_chunk_rows(4096, 2304, ctx, 8)


def test_a_partial_read_of_a_sharded_store_ends_at_the_first_chunk_not_written(tmp_path):
    url = str(tmp_path / "s.zarr")
    meta = make_meta(n_rows=1000, chunk_rows=120, ctx=16, num_shards=2)  # 8 chunks of 8 contexts of 15 rows
    acts = dtypes.encode(random_rows(1000, 8), "bfloat16")
    tokens = (np.arange(1000) % 100).astype(np.int32)

    def write(shard: int, chunks: int) -> None:
        writer = StoreWriter.open(StoreLocation(url), meta, shard)
        sink = ChunkSink(writer)
        rows = ShardRows.of(meta, shard)
        for k in range(writer.next_chunk, chunks):  # the shard's k-th chunk holds its rows [k*120, (k+1)*120)
            j = rows.chunks[k]
            sink.put(k * 120, acts[j * 120 : (j + 1) * 120], tokens[j * 120 : (j + 1) * 120])
        sink.close()
        writer.close()

    write(0, 3)  # chunks 0, 2, 4
    write(1, 1)  # chunk 1
    assert open_store(url, partial=True).n_rows == 3 * 120  # chunk 3 (shard 1's second) is the first gap
    write(1, 2)  # chunk 3: chunks 0..4 are written, shard 1's chunk 5 is the gap
    st = open_store(url, partial=True)
    assert st.n_rows == 5 * 120 and np.array_equal(st.read_rows_raw(0, 600), acts[:600])
    assert np.array_equal(st.context_ids(0, 600), np.arange(600) // 15)


def test_a_sharded_store_started_by_the_earlier_layout_is_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    meta = make_meta(n_rows=1000, chunk_rows=120, ctx=16, num_shards=2)
    StoreWriter.open(StoreLocation(url), meta, 1).close()
    progress = tmp_path / "s.zarr" / "_harvest" / "progress-00001-of-00002.json"
    # what the earlier version wrote: shard 1 of 2 owned the contiguous chunks 4..7, without a stride
    old = {k: v for k, v in json.loads(progress.read_text()).items() if k not in ("stride", "n_rows")}
    progress.write_text(json.dumps({**old, "first_chunk": 4, "end_chunk": 8, "chunks_done": 1}))
    with pytest.raises(StoreMismatchError, match="started in 2 shards by an earlier version of this tool"):
        StoreWriter.open(StoreLocation(url), meta, 1)
