"""Per-dimension running statistics in float64, kept per chunk and merged exactly.

Each chunk stores its own mean and sum of squared deviations (M2). Merging with Chan et al.'s pairwise formula
gives the statistics of any set of chunks without rereading activations, which is what makes resume and
sharded harvests cheap: a chunk's statistics are written once, by whoever wrote the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 (sum of squared deviations from the mean) per dimension, float64."""

    count: int
    mean: np.ndarray  # (D,)
    m2: np.ndarray  # (D,)

    @property
    def var(self) -> np.ndarray:
        """Population variance per dimension."""
        if self.count == 0:
            return np.full_like(self.mean, np.nan)
        return self.m2 / self.count

    @property
    def total_variance(self) -> float:
        """sum_i ||x_i - mean||^2 over all rows: the denominator of explained variance."""
        return float(self.m2.sum())


def moments_of(rows_BD: np.ndarray, block_rows: int = 2048) -> Moments:
    """Moments of a block of rows, accumulated in float64 a block at a time to bound memory."""
    n, d = rows_BD.shape
    total = Moments(0, np.zeros(d), np.zeros(d))
    with np.errstate(invalid="ignore"):  # NaN rows give NaN moments; `store verify` reports them
        for start in range(0, n, block_rows):
            block = rows_BD[start : start + block_rows].astype(np.float64)
            mean = block.mean(axis=0)
            m2 = np.square(block - mean).sum(axis=0)
            total = merge(total, Moments(block.shape[0], mean, m2))
    return total


def merge(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s exact merge of two sets of moments."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + np.square(delta) * (a.count * b.count / n)
    return Moments(n, mean, m2)


def merge_all(counts: np.ndarray, chunk_means: np.ndarray, chunk_m2s: np.ndarray) -> Moments:
    """Merge per-chunk moments (``chunk_means``, ``chunk_m2s``: (n_chunks, D)) in one vectorised step (same result
    as folding :func:`merge`)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return Moments(0, np.zeros(chunk_means.shape[1]), np.zeros(chunk_means.shape[1]))
    with np.errstate(invalid="ignore"):
        mean = (counts[:, None] * chunk_means).sum(axis=0) / n
        m2 = chunk_m2s.sum(axis=0) + (counts[:, None] * np.square(chunk_means - mean)).sum(axis=0)
    return Moments(int(n), mean, m2)
