"""Seeded, shuffled batches of rows, streamed from a store with bounded memory.

Order: each epoch permutes the store's chunks (restricted to a row range), deals them round-robin into
``num_streams`` streams, and cuts each stream into windows of about ``shuffle_rows`` rows. A window's rows are
shuffled together; a stream's batches are consecutive slices of its shuffled windows. Global batch ``b`` is the
concatenation of batch ``b`` of every stream, so a distributed job where rank ``r`` reads only stream ``r``
sees exactly the global batches a single process would (see fit's DDP support).

Everything about the order is a pure function of (seed, epoch, stream, window): resuming at step ``t`` costs
no reads of the skipped part, and two processes with the same settings see identical batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from store.background import Background
from store.errors import StoreError
from store.format import ceil_div
from store.reader import ActivationStore

log = logging.getLogger(__name__)

Piece = tuple[int, int, int]  # (chunk index, first row, one past last row), rows absolute


@dataclass(frozen=True)
class BatchOrder:
    """The row order of every epoch over ``row_range`` of a store. No I/O."""

    n_rows: int
    chunk_rows: int
    row_range: tuple[int, int]
    batch_size: int
    seed: int
    shuffle_rows: int = 65536
    """Rows shuffled together (whole chunks, at least one): more mixes better and costs memory."""
    num_streams: int = 1

    def __post_init__(self) -> None:
        a, b = self.row_range
        if not 0 <= a < b <= self.n_rows:
            raise StoreError(f"row range [{a}, {b}) is empty or outside the store's {self.n_rows} rows")
        if self.batch_size <= 0 or self.batch_size % self.num_streams:
            raise StoreError(
                f"batch size {self.batch_size} must be positive and divisible by the {self.num_streams} streams"
            )
        if self.batches_per_epoch == 0:
            raise StoreError(
                f"row range [{a}, {b}) holds fewer rows per stream than one batch of {self.sub_batch}: "
                "use a smaller batch or a larger store"
            )

    @property
    def sub_batch(self) -> int:
        """Rows each stream contributes to a global batch."""
        return self.batch_size // self.num_streams

    @cached_property
    def pieces(self) -> tuple[Piece, ...]:
        a, b = self.row_range
        out = []
        for j in range(a // self.chunk_rows, ceil_div(b, self.chunk_rows)):
            lo, hi = max(a, j * self.chunk_rows), min(b, (j + 1) * self.chunk_rows)
            if hi > lo:
                out.append((j, lo, hi))
        return tuple(out)

    @cached_property
    def batches_per_epoch(self) -> int:
        """Whole global batches per pass; the few rows left over at a stream's end are skipped that epoch.

        Each epoch deals the pieces to the streams in a new order, so a stream may draw the short pieces at the
        range's ends: the count is what the stream dealt the fewest, smallest pieces still fills (counted from
        the deal in piece order, a stream could run out of rows before the epoch's last batch, and train on an
        empty share of it)."""
        sizes = sorted(hi - lo for _, lo, hi in self.pieces)
        return sum(sizes[: len(sizes) // self.num_streams]) // self.sub_batch

    @property
    def rows_per_epoch(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *key])))

    def windows(self, epoch: int, stream: int) -> list[list[Piece]]:
        """The pieces of each window of one stream in one epoch."""
        order = self._rng(epoch).permutation(len(self.pieces))
        mine = [self.pieces[i] for i in order[stream :: self.num_streams]]
        per_window = max(1, self.shuffle_rows // self.chunk_rows)
        return [mine[i : i + per_window] for i in range(0, len(mine), per_window)]

    def window_permutation(self, epoch: int, stream: int, window: int, n: int) -> np.ndarray:
        return self._rng(epoch, stream + 1, window).permutation(n)

    def stream_rows(self, epoch: int, stream: int) -> np.ndarray:
        """Every row index of one stream's epoch, in the order its batches take them (for in-memory sampling:
        the same order :class:`ShuffledBatches` streams). The latest epoch's arrays are cached."""
        cache = self.__dict__.setdefault("_rows_cache", {})
        if (epoch, stream) not in cache:
            if any(e != epoch for e, _ in cache):
                cache.clear()
            cache[(epoch, stream)] = self._stream_rows(epoch, stream)
        return cache[(epoch, stream)]

    def _stream_rows(self, epoch: int, stream: int) -> np.ndarray:
        parts = []
        for w, pieces in enumerate(self.windows(epoch, stream)):
            rows = np.concatenate([np.arange(lo, hi) for _, lo, hi in pieces])
            parts.append(rows[self.window_permutation(epoch, stream, w, len(rows))])
        return np.concatenate(parts)

    def batch_rows(self, step: int, streams: list[int] | None = None) -> np.ndarray:
        """Row indices of global batch ``step`` (only the given streams' parts, in stream order)."""
        epoch, b = divmod(step, self.batches_per_epoch)
        streams = range(self.num_streams) if streams is None else streams
        return np.concatenate(
            [self.stream_rows(epoch, s)[b * self.sub_batch : (b + 1) * self.sub_batch] for s in streams]
        )


class ShuffledBatches:
    """Iterate global batches ``start_step .. start_step + n_steps - 1`` with background prefetch.

    Yields (step, raw rows): a tensor in the store's storage dtype (uint16 bits for bfloat16), shape
    (rows, d_model). Decode it on the target device (``store.dtypes.decode``) so only 16-bit data moves.

    Memory is bounded and recycled: each stream reads into two window buffers (the one being consumed and the
    next), and batches are written into a ring of ``prefetch + 2`` buffers, so a batch is overwritten
    ``prefetch + 2`` steps after it was yielded: copy it (decoding does) if you keep it longer. With
    ``pin_memory`` batches are fresh pinned tensors instead (torch's pinned allocator tracks the non-blocking
    copies that read them), ready for ``.to("cuda", non_blocking=True)``.

    ``streams`` picks the streams this process reads (default: all). ``read_workers`` chunk reads run at once
    (more hide object-store latency). ``verify_checksums=False`` skips the crc32c pass over each chunk.
    ``background=False`` produces each batch when it is asked for, in the caller's thread: better when the
    caller's compute already uses every core (a CPU training step), where a helper thread only interrupts it.
    """

    def __init__(
        self,
        store: ActivationStore,
        order: BatchOrder,
        *,
        start_step: int = 0,
        n_steps: int | None = None,
        streams: list[int] | None = None,
        prefetch: int = 4,
        read_workers: int | None = None,
        pin_memory: bool = False,
        verify_checksums: bool = True,
        background: bool = True,
    ) -> None:
        if order.n_rows > store.n_rows or order.chunk_rows != store.chunk_rows:
            raise StoreError("batch order was made for another store")
        self.store = store
        self.order = order
        self.start_step = start_step
        self.n_steps = n_steps if n_steps is not None else order.batches_per_epoch - start_step
        self.streams = list(range(order.num_streams)) if streams is None else list(streams)
        self.pin_memory = pin_memory
        self.verify_checksums = verify_checksums
        self.background = background
        self.dtype = {"uint16": torch.uint16, "float16": torch.float16}[store.meta.storage_dtype]
        self._rows_per_batch = order.sub_batch * len(self.streams)
        self._ring = [] if pin_memory else [
            torch.zeros((self._rows_per_batch, store.d_model), dtype=self.dtype) for _ in range(max(1, prefetch) + 2)
        ]
        self._prefetch_depth = max(1, prefetch)
        self._prefetch: Background | None = None
        self._started = False
        if read_workers is None:
            # Local reads are memory copies: a helper thread only contends with the gather for cores and memory
            # bandwidth (measured slower on 2 cores). Object stores need concurrent requests to hide latency.
            read_workers = 0 if store.location.is_local else 8
        self._pool = ThreadPoolExecutor(read_workers, thread_name_prefix="chunk-read") if read_workers else None

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        if self._started:
            raise StoreError("a ShuffledBatches can be iterated once")
        self._started = True
        if not self.background:
            yield from self._generate()
            return
        self._prefetch = Background(self._generate(), self._prefetch_depth, "batch-prefetch")
        try:
            yield from self._prefetch
        finally:
            self.close()

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _batch_buffer(self, k: int) -> torch.Tensor:
        if self.pin_memory:
            return torch.empty((self._rows_per_batch, self.store.d_model), dtype=self.dtype, pin_memory=True)
        return self._ring[k % len(self._ring)]

    def _generate(self) -> Iterator[tuple[int, torch.Tensor]]:
        bpe = self.order.batches_per_epoch
        sub = self.order.sub_batch
        step, end, k = self.start_step, self.start_step + self.n_steps, 0
        cursors: dict[int, _StreamCursor] = {}
        while step < end:
            epoch, first = divmod(step, bpe)
            last = min(bpe, first + end - step)
            cursors = {s: _StreamCursor(self, epoch, s, first * sub, cursors.get(s)) for s in self.streams}
            for b in range(first, last):
                out = self._batch_buffer(k)
                for i, s in enumerate(self.streams):
                    cursors[s].fill(out[i * sub : (i + 1) * sub])
                yield epoch * bpe + b, out
                k += 1
            step = epoch * bpe + last

    def read_window(self, pieces: list[Piece], buffer: torch.Tensor) -> Future:
        """Start reading a window's pieces concurrently into ``buffer``; returns a future of the filled rows."""
        rows = sum(hi - lo for _, lo, hi in pieces)
        window = buffer[:rows]
        target = window.numpy()
        parts, offset = [], 0
        for piece in pieces:
            n = piece[2] - piece[1]
            parts.append((piece, target[offset : offset + n]))
            offset += n
        if self._pool is None:
            return _Done(window, [lambda p=p, t=t: self._read_piece(p, t) for p, t in parts])
        futures = [self._pool.submit(self._read_piece, p, t) for p, t in parts]
        return self._pool.submit(_wait_all, futures, window)

    def _read_piece(self, piece: Piece, out: np.ndarray) -> None:
        j, lo, hi = piece
        c0, c1 = self.store.rows.chunk_bounds(j)
        if (lo, hi) == (c0, c1):
            # straight from the file into the window: no extra copy
            self.store.read_chunk_into(j, out, verify_checksum=self.verify_checksums)
        else:
            out[:] = self.store.read_chunk_raw(j)[lo - c0 : hi - c0]

    def window_buffer(self) -> torch.Tensor:
        per_window = max(1, self.order.shuffle_rows // self.order.chunk_rows)
        # zeros, not empty: fault the pages in once here rather than inside every first read of a window.
        return torch.zeros((per_window * self.order.chunk_rows, self.store.d_model), dtype=self.dtype)


class _Done:
    """A read done on demand in the calling thread (local stores): ``result()`` performs it."""

    def __init__(self, window: torch.Tensor, reads: list) -> None:
        self.window, self.reads = window, reads

    def result(self) -> torch.Tensor:
        for read in self.reads:
            read()
        self.reads = []
        return self.window


def _wait_all(parts: list[Future], window: torch.Tensor) -> torch.Tensor:
    for part in parts:
        part.result()
    return window


class _StreamCursor:
    """Position in one stream's shuffled windows; gathers rows straight into batch buffers.

    Holds two window buffers: the one being consumed and the one being read ahead (reused from the previous
    epoch's cursor, so a long run allocates them once).
    """

    def __init__(self, loader: ShuffledBatches, epoch: int, stream: int, skip_rows: int,
                 previous: _StreamCursor | None) -> None:
        self.loader, self.epoch, self.stream = loader, epoch, stream
        self.windows = loader.order.windows(epoch, stream)
        self.sizes = [sum(hi - lo for _, lo, hi in w) for w in self.windows]
        self.w = 0
        while self.w < len(self.windows) and skip_rows >= self.sizes[self.w]:
            skip_rows -= self.sizes[self.w]
            self.w += 1
        self.skip = skip_rows
        self.buffers = previous.buffers if previous is not None else [loader.window_buffer(), loader.window_buffer()]
        if previous is not None and previous.pending is not None:
            previous.pending.result()  # never read into a buffer that an abandoned read still fills
        self.current = 0
        self.window: torch.Tensor | None = None
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0
        self.pending = self._start_read(self.w, 1)

    def _start_read(self, w: int, buffer_index: int) -> Future | None:
        if w >= len(self.windows):
            return None
        return self.loader.read_window(self.windows[w], self.buffers[buffer_index])

    def _advance(self) -> None:
        if self.pending is None:
            raise StoreError("stream ran out of rows (batch order and store disagree)")
        self.window = self.pending.result()
        self.current ^= 1
        perm = self.loader.order.window_permutation(self.epoch, self.stream, self.w, self.sizes[self.w])
        self.perm = torch.from_numpy(perm[self.skip :])
        self.skip = 0
        self.pos = 0
        self.w += 1
        # Read the next window into the other buffer while this one is consumed.
        self.pending = self._start_read(self.w, self.current ^ 1)

    def fill(self, out: torch.Tensor) -> None:
        filled = 0
        while filled < len(out):
            if self.window is None or self.pos >= len(self.perm):
                self._advance()
            take = min(len(out) - filled, len(self.perm) - self.pos)
            torch.index_select(self.window, 0, self.perm[self.pos : self.pos + take], out=out[filled : filled + take])
            filled += take
            self.pos += take
