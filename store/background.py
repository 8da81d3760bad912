"""Helper threads with a bounded queue to the caller: the one way this code base overlaps work.

:class:`Background` runs a producer (reading, tokenising, prefetching batches) ahead of the caller, who iterates
its items in order; :class:`Worker` consumes items the caller puts (writing chunks) behind it. Either way an
exception in the helper thread is re-raised in the caller, and ``close`` stops the thread and joins it: no
helper may outlive the command, since a thread still running torch or zarr code at interpreter exit can abort
the process.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_DONE = object()
"""Put after the last item."""

_POLL_SECONDS = 0.1
"""How often a producer blocked on a full queue looks whether the consumer has gone."""

JOIN_SECONDS = 120.0
"""How long ``close`` waits for a producer busy inside one item (a slow read) before giving up on it."""


class _Failure:
    """The producer's exception, on its way to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Background(Generic[T]):
    """Iterate ``items`` on a helper thread, at most ``maxsize`` items ahead of the caller.

    Use it as an iterator inside ``with`` (or call :meth:`close`): closing early stops the producer after the
    item it is working on and joins its thread.
    """

    def __init__(self, items: Iterable[T], maxsize: int, name: str) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(max(1, maxsize))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE or isinstance(item, _Failure):
            self._finished = True
            if isinstance(item, _Failure):
                raise item.exc
            raise StopIteration
        return item

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: object) -> bool:
        """Put unless the consumer has gone; False once it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self._items)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # re-raised in the consumer
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator's cleanup runs in the thread that ran it
                close()

    def close(self) -> None:
        """Stop the producer and join its thread; items not taken yet are dropped."""
        self._stop.set()
        self._finished = True
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        _join(self._thread)


class Worker(Generic[T]):
    """Hand items to ``handle`` on a helper thread, at most ``maxsize`` waiting.

    ``put`` returns at once unless ``maxsize`` items wait, which bounds memory. An exception in ``handle``
    surfaces on the next ``put`` or on ``close``; the items after it are dropped.
    """

    def __init__(self, handle: Callable[[T], None], maxsize: int, name: str) -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(max(1, maxsize))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self.raise_if_failed()
        self._queue.put(item)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _consume(self) -> None:
        try:
            while (item := self._queue.get()) is not _DONE:
                self._handle(item)
        except BaseException as exc:  # handed to the caller
            self._error = exc
            while self._queue.get() is not _DONE:  # drain, so that the caller never blocks on a full queue
                pass

    def close(self) -> None:
        """Wait until every item put is handled, join the thread, and re-raise the handler's exception if any."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            _join(self._thread, timeout=None)
        self.raise_if_failed()


def _join(thread: threading.Thread, timeout: float | None = JOIN_SECONDS) -> None:
    if thread is threading.current_thread() or not thread.ident:
        return
    thread.join(timeout)
    if thread.is_alive():
        log.warning("helper thread %r did not stop within %.0f s; leaving it", thread.name, timeout)


class Deferred:
    """``fn(*args)`` run on a daemon thread from now on; :meth:`result` waits for it and returns its value (or raises
    what it raised). For a check that must be done before some later step, but need not hold up what comes first."""

    def __init__(self, fn: Callable[..., T], *args: object) -> None:
        self._done = threading.Event()
        self._value: object = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as exc:  # handed to whoever waits for the result
                self._value = exc
            finally:
                self._done.set()

        threading.Thread(target=run, daemon=True, name=f"deferred-{getattr(fn, '__name__', 'check')}").start()

    def result(self) -> T:
        self._done.wait()
        if isinstance(self._value, BaseException):
            raise self._value
        return self._value  # type: ignore[return-value]
