"""Feeding a store writer from a background thread: blocks of rows in, whole chunks out."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from store.background import Worker
from store.errors import StoreError
from store.stats import Moments, merge
from store.writer import StoreWriter


class ChunkSink:
    """Background writer: accepts blocks of consecutive rows, assembles whole chunks, writes them.

    ``put`` returns at once unless ``max_pending`` blocks wait, which bounds memory; an error in the writer
    thread surfaces on the next ``put`` or on ``close``.

    A block may come with the statistics of its stored values, one :class:`Moments` per piece of it cut where
    chunks begin (:meth:`piece_cuts`; the harvest computes them on its device): a chunk whose pieces all have
    them gets their exact merge, and the writer does not recompute them on the host.
    """

    def __init__(self, writer: StoreWriter, max_pending: int = 8) -> None:
        self.writer = writer
        self._row = writer.resume_row
        self._acts: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._pieces: deque[tuple[int, int, Moments | None]] = deque()
        """(first row, end row, moments or None) of each piece buffered, in order."""
        self._buffered = 0
        self.rows_written = 0
        self._worker: Worker[tuple[int, np.ndarray, np.ndarray, Sequence[Moments] | None]] = Worker(
            lambda block: self._absorb(*block), max_pending, "store-writer"
        )

    def piece_cuts(self, start_row: int, n: int) -> list[int]:
        """Offsets cutting rows [start_row, start_row + n) where this writer's chunks begin: 0, ..., n."""
        size = self.writer.meta.chunk_rows
        first = (start_row // size + 1) * size
        return [0, *range(first - start_row, n, size), n] if n else [0]

    def put(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray,
            moments: Sequence[Moments] | None = None) -> None:
        """Queue rows [start_row, start_row + len) ; blocks must arrive in order, without gaps. ``moments``, if
        given, are the statistics of the pieces :meth:`piece_cuts` makes of the block."""
        self._worker.put((start_row, acts_raw, tokens, moments))

    def _absorb(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray,
                moments: Sequence[Moments] | None) -> None:
        expected = self._row + self._buffered
        if start_row != expected:
            raise StoreError(f"rows arrived out of order: got row {start_row}, expected {expected}")
        self._add_pieces(start_row, len(acts_raw), moments)
        self._acts.append(acts_raw)
        self._tokens.append(tokens)
        self._buffered += len(acts_raw)
        while self._buffered and self.writer.next_chunk < self.writer.end_chunk:
            start, stop = self.writer.rows.chunk_bounds(self.writer.next_chunk)
            if self._buffered < stop - start:
                break
            acts = np.concatenate(self._acts) if len(self._acts) > 1 else self._acts[0]
            toks = np.concatenate(self._tokens) if len(self._tokens) > 1 else self._tokens[0]
            n = stop - start
            self.writer.write_chunk(self.writer.next_chunk, acts[:n], toks[:n], moments=self._chunk_moments(stop))
            self.rows_written += n
            self._acts, self._tokens = ([acts[n:]], [toks[n:]]) if len(acts) > n else ([], [])
            self._row, self._buffered = stop, self._buffered - n

    def _add_pieces(self, start_row: int, n: int, moments: Sequence[Moments] | None) -> None:
        if moments is None:
            self._pieces.append((start_row, start_row + n, None))
            return
        cuts = self.piece_cuts(start_row, n)
        pieces = list(pairwise(cuts))
        if [m.count for m in moments] != [b - a for a, b in pieces]:
            raise StoreError(f"the statistics of rows {start_row}..{start_row + n} are not cut at the chunks' starts")
        self._pieces.extend((start_row + a, start_row + b, m) for (a, b), m in zip(pieces, moments, strict=True))

    def _chunk_moments(self, stop: int) -> Moments | None:
        """The merged statistics of the buffered rows before ``stop`` (a chunk's), or None where a piece of them
        came without any (the writer then computes them from the rows)."""
        total: Moments | None = None
        missing = False
        while self._pieces and self._pieces[0][0] < stop:
            _, end, m = self._pieces[0]
            missing = missing or m is None
            if end > stop:  # a block without statistics runs on into the next chunk (pieces with them never do)
                break
            self._pieces.popleft()
            if m is not None:
                total = m if total is None else merge(total, m)
        return None if missing else total

    def flush_partial(self) -> int:
        """After the data set ran out: write the rows buffered so far as the store's last, short chunk.

        Returns the row at which the store now ends.
        """
        self.close()
        end = self._row + self._buffered
        if self._buffered:
            acts, toks = np.concatenate(self._acts), np.concatenate(self._tokens)
            self.writer.write_chunk(self.writer.next_chunk, acts, toks, last=True, moments=self._chunk_moments(end))
            self.rows_written += len(acts)
            self._acts, self._tokens, self._row, self._buffered = [], [], end, 0
        else:
            self.writer.mark_exhausted(end)
        return end

    def close(self) -> None:
        """Wait until every queued row is written (a partial last chunk stays buffered)."""
        self._worker.close()
