import numpy as np

from store.stats import Moments, merge, merge_all, moments_of


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
