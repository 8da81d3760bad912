"""The helper threads: items in order, the helper's exception in the caller, and no thread left behind."""

import threading
import time

import pytest

from store.background import Background, Worker


def test_background_yields_every_item_in_order():
    with Background(iter(range(1000)), 4, "test-producer") as items:
        assert list(items) == list(range(1000))
        assert next(items, None) is None  # exhausted stays exhausted


def test_background_reraises_the_producers_exception():
    def produce():
        yield 1
        yield 2
        raise ValueError("broken source")

    items = Background(produce(), 4, "test-producer")
    got = []
    with pytest.raises(ValueError, match="broken source"):
        for item in items:
            got.append(item)
    items.close()
    assert got == [1, 2]


def test_closing_early_stops_and_joins_the_producer():
    produced = []
    cleaned_up = threading.Event()

    def produce():
        try:
            for i in range(10**9):
                produced.append(i)
                yield i
        finally:
            cleaned_up.set()

    items = Background(produce(), 2, "test-producer")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert not items._thread.is_alive() and cleaned_up.is_set()
    assert len(produced) <= 3 + 2 + 1  # taken + queued + the one waiting to be queued
    assert next(items, None) is None


def test_worker_handles_items_in_order_and_joins_on_close():
    seen = []
    worker = Worker(lambda item: (time.sleep(0.001), seen.append(item)), 2, "test-worker")
    for i in range(50):
        worker.put(i)
    worker.close()
    assert seen == list(range(50)) and not worker._thread.is_alive()


def test_worker_reraises_the_handlers_exception_on_put_and_close():
    def handle(item):
        if item == 3:
            raise OSError("disk full")

    worker = Worker(handle, 2, "test-worker")
    with pytest.raises(OSError, match="disk full"):
        for i in range(10_000):
            worker.put(i)
            time.sleep(0.0001)
    with pytest.raises(OSError, match="disk full"):
        worker.close()
    assert not worker._thread.is_alive()
