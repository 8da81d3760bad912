import numpy as np
import pytest
from direct_store import make_meta, random_rows, write_store

from store.batches import BatchOrder, ShuffledBatches
from store.errors import StoreError
from store.reader import open_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("b") / "s.zarr")
    meta = make_meta(n_rows=2000, d=4, chunk_rows=128)
    write_store(path, meta, random_rows(2000, 4))  # random rows: each row's bytes identify it
    return open_store(path)


def collect(store, order, **kw):
    return [b.numpy().copy() for _, b in ShuffledBatches(store, order, **kw)]


def test_one_epoch_visits_rows_of_range_once_in_shuffled_order(store):
    order = BatchOrder(store.n_rows, store.chunk_rows, (100, 1900), batch_size=64, seed=3, shuffle_rows=384)
    batches = collect(store, order)
    assert len(batches) == order.batches_per_epoch == 1800 // 64
    table = {r.tobytes(): i for i, r in enumerate(store.read_rows_raw(0, store.n_rows))}
    ids = np.array([table[r.tobytes()] for b in batches for r in b])
    assert len(set(ids)) == len(ids) and ids.min() >= 100 and ids.max() < 1900
    assert not np.all(np.diff(ids) > 0)  # shuffled
    # a batch mixes several chunks
    assert len({i // 128 for i in ids[:64]}) >= 2


def test_order_is_seeded_and_resumable(store):
    order = BatchOrder(store.n_rows, store.chunk_rows, (0, 1800), batch_size=50, seed=7, shuffle_rows=256)
    full = collect(store, order, n_steps=2 * order.batches_per_epoch)  # crosses into a second epoch
    again = collect(store, order, n_steps=len(full))
    assert all(np.array_equal(a, b) for a, b in zip(full, again, strict=True))
    for start in (1, 13, order.batches_per_epoch - 1, order.batches_per_epoch + 2):
        tail = collect(store, order, start_step=start, n_steps=len(full) - start)
        assert all(np.array_equal(a, b) for a, b in zip(full[start:], tail, strict=True)), start
    other = collect(store, BatchOrder(store.n_rows, store.chunk_rows, (0, 1800), 50, seed=8, shuffle_rows=256),
                    n_steps=3)
    assert not np.array_equal(other[0], full[0])
    epoch2 = full[order.batches_per_epoch]
    assert not np.array_equal(epoch2, full[0])


def test_streams_compose_the_global_batch(store):
    order = BatchOrder(store.n_rows, store.chunk_rows, (0, 2000), batch_size=64, seed=1, shuffle_rows=256,
                       num_streams=2)
    full = collect(store, order, n_steps=5)
    halves = [collect(store, order, n_steps=5, streams=[s]) for s in (0, 1)]
    for b, h0, h1 in zip(full, *halves, strict=True):
        assert np.array_equal(b, np.concatenate([h0, h1]))


@pytest.mark.parametrize("streams", [2, 3])
def test_every_stream_fills_every_batch_of_every_epoch(streams):
    """Whichever pieces an epoch deals a stream (the short ones at the range's ends included), each of its batches
    is whole: a stream that ran out of rows gave its process an empty share, and a NaN loss."""
    for seed in range(30):
        order = BatchOrder(2000, 128, (50, 1950), batch_size=60, seed=seed, shuffle_rows=256, num_streams=streams)
        for epoch in range(3):
            for s in range(streams):
                assert len(order.stream_rows(epoch, s)) >= order.batches_per_epoch * order.sub_batch, (seed, epoch)
        assert len(order.batch_rows(order.batches_per_epoch - 1)) == 60


def test_bad_orders_are_refused(store):
    with pytest.raises(StoreError, match="divisible"):
        BatchOrder(store.n_rows, store.chunk_rows, (0, 2000), batch_size=63, seed=0, num_streams=2)
    with pytest.raises(StoreError, match="fewer rows"):
        BatchOrder(store.n_rows, store.chunk_rows, (0, 100), batch_size=200, seed=0)


def test_row_order_matches_what_is_streamed(store):
    """In-memory sampling (fit's memory mode) and streaming see the very same batches."""
    order = BatchOrder(store.n_rows, store.chunk_rows, (50, 1950), batch_size=64, seed=5, shuffle_rows=256,
                       num_streams=2)
    streamed = collect(store, order, n_steps=order.batches_per_epoch + 3)
    every_row = store.read_rows_raw(0, store.n_rows)
    for step, batch in enumerate(streamed):
        assert np.array_equal(every_row[order.batch_rows(step)], batch), step


def test_foreground_loading_gives_the_same_batches(store):
    order = BatchOrder(store.n_rows, store.chunk_rows, (0, 2000), batch_size=64, seed=2, shuffle_rows=256)
    fg = [b.numpy().copy() for _, b in ShuffledBatches(store, order, n_steps=40, background=False)]
    bg = collect(store, order, n_steps=40)
    assert all(np.array_equal(a, b) for a, b in zip(fg, bg, strict=True))
