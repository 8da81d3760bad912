import itertools

import numpy as np
import pytest
import torch
from direct_store import make_meta

from store import dtypes
from store.errors import StoreError
from store.location import StoreLocation
from store.reader import open_store
from store.sink import ChunkSink
from store.stats import Moments, merge, merge_all, moments_of, moments_of_pieces
from store.verify import verify_store
from store.writer import StoreWriter


def test_moments_match_float64_reference():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5000, 7)) * 3 + 1000).astype(np.float32)  # a large mean stresses cancellation
    m = moments_of(x, block_rows=777)
    ref = x.astype(np.float64)
    assert m.count == 5000
    np.testing.assert_allclose(m.mean, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.var, ref.var(0), rtol=1e-9)
    np.testing.assert_allclose(m.total_variance, ((ref - ref.mean(0)) ** 2).sum(), rtol=1e-9)


def test_merge_all_equals_pairwise_merge_and_whole():
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 5)) * 2 + 3 for n in (10, 1, 300, 57)]
    ms = [moments_of(p) for p in parts]
    folded = Moments(0, np.zeros(5), np.zeros(5))
    for m in ms:
        folded = merge(folded, m)
    vec = merge_all(np.array([m.count for m in ms]), np.stack([m.mean for m in ms]), np.stack([m.m2 for m in ms]))
    whole = np.concatenate(parts)
    for got in (folded, vec):
        assert got.count == len(whole)
        np.testing.assert_allclose(got.mean, whole.mean(0), rtol=1e-12)
        np.testing.assert_allclose(got.var, whole.var(0), rtol=1e-10)


def _bf16_rows(n: int, d: int, seed: int) -> torch.Tensor:
    """Stored-like rows: bf16-rounded, with a large mean (stresses cancellation) and a few outlier dimensions."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=g) * 3 + 1000
    rows[:, :2] *= 40
    return rows.to(torch.bfloat16)


def test_torch_piece_moments_equal_numpy_float64_ones():
    rows = _bf16_rows(5000, 33, seed=2)
    host = dtypes.decode_numpy(rows.view(torch.uint16).numpy(), "bfloat16")
    cuts = [0, 1, 2, 777, 2048, 2049, 4095, 4999, 5000]  # pieces of 1 row, across numpy's 2048-row blocks, ...
    for block_rows in (7, 1024):  # pieces taken in many small blocks, and in blocks of the default size
        pieces = moments_of_pieces(rows, cuts, block_rows=block_rows)
        assert [m.count for m in pieces] == [b - a for a, b in itertools.pairwise(cuts)]
        for (a, b), got in zip(itertools.pairwise(cuts), pieces, strict=True):
            want = moments_of(host[a:b])
            np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
            np.testing.assert_allclose(got.m2, want.m2, rtol=1e-12)


def _store_stats(path, meta, raw, tokens, blocks, with_moments):
    """Write ``raw`` through a ChunkSink in blocks of the given sizes; ``with_moments(i)``: whether block i brings
    its statistics (computed by torch, as the harvest does). Returns the stored per-chunk means and M2s."""
    writer = StoreWriter.open(StoreLocation(str(path)), meta)
    sink = ChunkSink(writer)
    row = 0
    for i, n in enumerate(blocks):
        moments = None
        if with_moments(i):
            moments = moments_of_pieces(torch.from_numpy(raw[row : row + n]).view(torch.bfloat16),
                                        sink.piece_cuts(row, n))
        sink.put(row, raw[row : row + n], tokens[row : row + n], moments)
        row += n
    sink.close()
    writer.finish()
    st = open_store(str(path))
    return st.chunk_moments()


def test_sink_merges_device_statistics_of_awkward_blocks_into_the_numpy_ones(tmp_path):
    n, d, chunk = 1000, 16, 128
    meta = make_meta(n_rows=n, d=d, chunk_rows=chunk)
    raw = _bf16_rows(n, d, seed=3).view(torch.uint16).numpy()
    tokens = np.arange(n, dtype=np.int32) % 100
    # Blocks of 1 row, blocks inside a chunk, blocks spanning two and three chunk boundaries, a block ending on one.
    blocks = [1, 126, 1, 300, 5, 7, 256, 51, 253]
    assert sum(blocks) == n
    numpy_means, numpy_m2s = _store_stats(tmp_path / "numpy.zarr", meta, raw, tokens, blocks, lambda i: False)
    torch_means, torch_m2s = _store_stats(tmp_path / "torch.zarr", meta, raw, tokens, blocks, lambda i: True)
    # Some blocks without statistics: their chunks fall back to numpy, the others keep the device's.
    mixed_means, mixed_m2s = _store_stats(tmp_path / "mixed.zarr", meta, raw, tokens, blocks, lambda i: i % 3 != 1)
    host = dtypes.decode_numpy(raw, "bfloat16")
    for j in range(meta.n_chunks):
        want = moments_of(host[j * chunk : (j + 1) * chunk])
        np.testing.assert_array_equal(numpy_means[j], want.mean)  # the numpy path is the reference itself
        np.testing.assert_array_equal(numpy_m2s[j], want.m2)
        for means, m2s in ((torch_means, torch_m2s), (mixed_means, mixed_m2s)):
            np.testing.assert_allclose(means[j], want.mean, rtol=1e-12)
            np.testing.assert_allclose(m2s[j], want.m2, rtol=1e-12)
    assert verify_store(str(tmp_path / "torch.zarr")).ok


def test_statistics_cut_elsewhere_than_at_chunk_starts_are_refused(tmp_path):
    meta = make_meta(n_rows=256, d=8, chunk_rows=128)
    raw = _bf16_rows(256, 8, seed=4).view(torch.uint16).numpy()
    writer = StoreWriter.open(StoreLocation(str(tmp_path / "s.zarr")), meta)
    sink = ChunkSink(writer)
    wrong = moments_of_pieces(torch.from_numpy(raw[:200]).view(torch.bfloat16), [0, 100, 200])
    try:
        sink.put(0, raw[:200], np.zeros(200, dtype=np.int32), wrong)
        with pytest.raises(StoreError, match="not cut at the chunks' starts"):
            sink.close()
    finally:
        writer.close()
    assert writer.progress.chunks_done == 0  # nothing was written with statistics that are not its own
