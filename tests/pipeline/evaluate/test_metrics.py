"""Metric functions against float64 references and hand-computed values."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pipeline.evaluate.metrics import (
    ReconstructionAccumulator,
    ce_recovered,
    cross_entropy_per_token,
    kl_per_token,
    t_interval,
)


def test_kl_and_ce_match_float64_references():
    g = torch.Generator().manual_seed(0)
    clean, spliced = torch.randn(6, 11, generator=g) * 3, torch.randn(6, 11, generator=g) * 3
    lp, lq = torch.log_softmax(clean, -1), torch.log_softmax(spliced, -1)
    kl = kl_per_token(lp, lq).numpy()
    c, s = clean.double().numpy(), spliced.double().numpy()
    p = np.exp(c) / np.exp(c).sum(-1, keepdims=True)
    q = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    np.testing.assert_allclose(kl, (p * np.log(p / q)).sum(-1), rtol=1e-5, atol=1e-6)
    assert torch.all(kl_per_token(lp, lp) == 0)
    targets = torch.tensor([0, 3, 10, 5, 5, 1])
    np.testing.assert_allclose(cross_entropy_per_token(lp, targets).numpy(),
                               -np.log(p[np.arange(6), targets.numpy()]), rtol=1e-5)


def test_ce_recovered_by_hand():
    assert ce_recovered(2.0, 2.0, 6.0) == 1.0
    assert ce_recovered(2.0, 6.0, 6.0) == 0.0
    assert ce_recovered(2.0, 3.0, 6.0) == 0.75
    assert math.isnan(ce_recovered(2.0, 3.0, 2.0))


def test_explained_variance_and_mse_against_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 7, generator=g, dtype=torch.float64) * 5 + 40
    x_hat = x + torch.randn(300, 7, generator=g, dtype=torch.float64)
    acc = ReconstructionAccumulator(4, [(0, 2), (2, 4)])
    z = torch.zeros(300, 4)
    for lo in range(0, 300, 70):  # in several batches
        sl = slice(lo, lo + 70)
        acc.add(x[sl], x_hat[sl], x[sl] / 5, x_hat[sl] / 5, z[sl], torch.ones(4))
    r = acc.result().to_dict()
    xn, xh = x.numpy(), x_hat.numpy()
    ev = 1 - ((xn - xh) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    assert r["explained_variance"] == pytest.approx(ev, rel=1e-10)
    assert r["mse_raw"] == pytest.approx(((xn - xh) ** 2).sum(-1).mean(), rel=1e-12)
    assert r["mse"] == pytest.approx(((xn - xh) ** 2).sum(-1).mean() / 25, rel=1e-12)
    assert r["explained_variance_normalised"] == pytest.approx(ev, rel=1e-9)  # scaling both leaves EV unchanged


def test_active_dead_and_group_statistics_on_a_hand_made_matrix():
    # 4 rows, 6 features in groups [0,3) and [3,6)
    z = torch.tensor([
        [0.5, 0.0, 0.0, 2.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 2e-4, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 4.0, 0.0, 0.0],
    ])
    acc = ReconstructionAccumulator(6, [(0, 3), (3, 6)])
    x = torch.zeros(4, 2)
    acc.add(x, x, x, x, z, torch.ones(6))
    r = acc.result().to_dict()
    # mean activations: f0 0.375, f1 5e-5 (below 1e-4), f3 1.5; f2, f4, f5 never fire
    assert r["active_features"] == 2
    assert r["dead_features"] == 3
    assert r["l0"] == 6 / 4
    g1, g2 = r["groups"]
    assert g1["live"] == 2 and g1["active"] == 1 and g1["token_rate"] == 1.0
    assert g1["intensity"] == pytest.approx((0.5 * 3 + 2e-4) / 4)
    assert g2["live"] == 1 and g2["token_rate"] == 0.5 and g2["intensity"] == pytest.approx(3.0)
    assert g2["feature_density"] == pytest.approx((2 / 4) / 3)
    assert r["feature_density"] == [0.75, 0.25, 0.0, 0.5, 0.0, 0.0]


def test_t_interval_matches_scipy_and_a_hand_value():
    values = [0.9, 0.95, 0.92]
    mean, half, n = t_interval(values)
    lo, hi = stats.t.interval(0.95, df=2, loc=np.mean(values), scale=stats.sem(values))
    assert n == 3 and mean == pytest.approx(np.mean(values)) and half == pytest.approx((hi - lo) / 2)
    # by hand: s = 0.025166, t(0.975, 2) = 4.302653, half = t * s / sqrt(3) = 0.062515
    assert half == pytest.approx(0.062515, rel=1e-4)
    assert math.isnan(t_interval([1.0])[1]) and t_interval([1.0])[0] == 1.0
