"""Feeding a store writer from a background thread: blocks of rows in, whole chunks out."""

from __future__ import annotations

import numpy as np

from store.background import Worker
from store.errors import StoreError
from store.writer import StoreWriter


class ChunkSink:
    """Background writer: accepts blocks of consecutive rows, assembles whole chunks, writes them.

    ``put`` returns at once unless ``max_pending`` blocks wait, which bounds memory; an error in the writer
    thread surfaces on the next ``put`` or on ``close``.
    """

    def __init__(self, writer: StoreWriter, max_pending: int = 8) -> None:
        self.writer = writer
        self._row = writer.resume_row
        self._acts: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._buffered = 0
        self.rows_written = 0
        self._worker: Worker[tuple[int, np.ndarray, np.ndarray]] = Worker(
            lambda block: self._absorb(*block), max_pending, "store-writer"
        )

    def put(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray) -> None:
        """Queue rows [start_row, start_row + len) ; blocks must arrive in order, without gaps."""
        self._worker.put((start_row, acts_raw, tokens))

    def _absorb(self, start_row: int, acts_raw: np.ndarray, tokens: np.ndarray) -> None:
        expected = self._row + self._buffered
        if start_row != expected:
            raise StoreError(f"rows arrived out of order: got row {start_row}, expected {expected}")
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
            self.writer.write_chunk(self.writer.next_chunk, acts[:n], toks[:n])
            self.rows_written += n
            self._acts, self._tokens = ([acts[n:]], [toks[n:]]) if len(acts) > n else ([], [])
            self._row, self._buffered = stop, self._buffered - n

    def flush_partial(self) -> int:
        """After the data set ran out: write the rows buffered so far as the store's last, short chunk.

        Returns the row at which the store now ends.
        """
        self.close()
        end = self._row + self._buffered
        if self._buffered:
            acts, toks = np.concatenate(self._acts), np.concatenate(self._tokens)
            self.writer.write_chunk(self.writer.next_chunk, acts, toks, last=True)
            self.rows_written += len(acts)
            self._acts, self._tokens, self._row, self._buffered = [], [], end, 0
        else:
            self.writer.mark_exhausted(end)
        return end

    def close(self) -> None:
        """Wait until every queued row is written (a partial last chunk stays buffered)."""
        self._worker.close()
