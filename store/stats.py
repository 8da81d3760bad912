"""Per-dimension running statistics in float64, kept per chunk and merged exactly.

Each chunk stores its own mean and sum of squared deviations (M2). Merging with Chan et al.'s pairwise formula
gives the statistics of any set of chunks without rereading activations, which is what makes resume and
sharded harvests cheap: a chunk's statistics are written once, by whoever wrote the chunk.

Two ways in, one result: :func:`moments_of` from numpy rows on the host, and :func:`moments_of_pieces` from a
torch tensor where it lives (the harvest's GPU), so that a harvest does not spend a host core per chunk in numpy.
Both compute each block's mean and M2 in float64 and combine blocks with :func:`merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from store.format import ceil_div


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


def moments_of_pieces(rows_BD: torch.Tensor, cuts: Sequence[int], block_rows: int = 1024) -> list[Moments]:
    """Moments of ``rows_BD[cuts[i]:cuts[i + 1]]`` for each i, computed in float64 on ``rows_BD``'s device.

    The harvest cuts a block of rows where the store's chunks begin, so that each piece belongs to one chunk and
    the sink merges a chunk's pieces exactly (:func:`merge`). Each piece is taken ``block_rows`` rows at a time
    (on a CPU, blocks that stay in cache ran about 4x faster than whole 4,096-row chunks); only the blocks' means
    and M2s (2 x D float64 each) cross to the host, together, where :func:`merge_all` combines each piece's.
    """
    bounds = list(pairwise(cuts))
    blocks = [(lo, min(lo + block_rows, stop)) for start, stop in bounds for lo in range(start, stop, block_rows)]
    if not blocks:
        return []
    means, m2s = [], []
    with torch.inference_mode():
        for lo, hi in blocks:
            block = rows_BD[lo:hi].to(torch.float64, copy=True)  # a copy of its own: the rest is in place
            mean = block.mean(dim=0)
            means.append(mean)
            m2s.append(block.sub_(mean).square_().sum(dim=0))
        both = torch.stack([torch.stack(means), torch.stack(m2s)]).cpu().numpy()
    counts = np.array([hi - lo for lo, hi in blocks])
    out, first = [], 0
    for a, b in bounds:
        n = ceil_div(b - a, block_rows)  # the piece's blocks
        out.append(merge_all(counts[first : first + n], both[0, first : first + n], both[1, first : first + n]))
        first += n
    return out


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
