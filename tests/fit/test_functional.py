"""The SAE's math against float64 references written out longhand."""

import numpy as np
import pytest
import torch

from fit import functional as fn


def test_group_sizes_when_n_is_not_divisible_by_k():
    assert fn.group_sizes(2304, 5) == [461, 461, 461, 461, 460]
    assert fn.group_sizes(10, 3) == [4, 3, 3]
    assert fn.group_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError):
        fn.group_sizes(2, 3)


def test_penalty_weights_are_geometric_per_group():
    w = fn.penalty_weights(11, 0.04, groups=3, gamma=1.5)
    expected = [0.04] * 4 + [0.06] * 4 + [0.09] * 3
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-15)
    np.testing.assert_allclose(fn.penalty_weights(5, 0.04).numpy(), [0.04] * 5)


def test_loss_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    W_enc = torch.randn(5, 6, generator=g, dtype=torch.float64)
    b_enc = torch.randn(6, generator=g, dtype=torch.float64)
    W_dec = fn.unit_rows(torch.randn(6, 5, generator=g, dtype=torch.float64))
    b_dec = torch.randn(5, generator=g, dtype=torch.float64)
    w = fn.penalty_weights(6, 0.04, 2, 1.5).double()
    z = fn.encode(x, W_enc, b_enc)
    x_hat = fn.decode(z, W_dec, b_dec)
    recon = fn.reconstruction_loss(fn.squared_error(x, x_hat), "mse")
    pen = fn.relu_penalty(z, w)
    # longhand
    xn, Wn, bn, Wd, bd = x.numpy(), W_enc.numpy(), b_enc.numpy(), W_dec.numpy(), b_dec.numpy()
    z_ref = np.maximum(xn @ Wn + bn, 0)
    xh_ref = z_ref @ Wd + bd
    recon_ref = np.mean([np.sum((xn[i] - xh_ref[i]) ** 2) for i in range(7)])
    pen_ref = np.mean([sum(w.numpy()[j] * abs(z_ref[i, j]) for j in range(6)) for i in range(7)])
    assert np.isclose(recon.item(), recon_ref, rtol=1e-12) and np.isclose(pen.item(), pen_ref, rtol=1e-12)
    l2 = fn.reconstruction_loss(fn.squared_error(x, x_hat), "l2").item()
    assert np.isclose(l2, np.mean([np.linalg.norm(xn[i] - xh_ref[i]) for i in range(7)]), rtol=1e-12)


def test_float32_loss_is_close_to_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 32, generator=g, dtype=torch.float64) * 10
    W_enc, b_enc = torch.randn(32, 48, generator=g, dtype=torch.float64), torch.zeros(48, dtype=torch.float64)
    W_dec, b_dec = fn.unit_rows(torch.randn(48, 32, generator=g, dtype=torch.float64)), torch.zeros(32).double()
    w = fn.penalty_weights(48, 0.04, 5, 1.5)

    def loss(dt):
        z = fn.encode(x.to(dt), W_enc.to(dt), b_enc.to(dt))
        sq = fn.squared_error(x.to(dt), fn.decode(z, W_dec.to(dt), b_dec.to(dt)))
        return (fn.reconstruction_loss(sq) + fn.relu_penalty(z, w.to(dt))).item()

    assert np.isclose(loss(torch.float32), loss(torch.float64), rtol=1e-5)


def test_layer_norm_round_trip_and_formula():
    x = torch.randn(4, 9, dtype=torch.float64) * 5 + 3
    y, mu, std = fn.layer_norm(x)
    ref_mu = x.numpy().mean(-1, keepdims=True)
    ref_std = x.numpy().std(-1, ddof=1, keepdims=True)
    np.testing.assert_allclose(y.numpy(), (x.numpy() - ref_mu) / (ref_std + fn.LN_EPS), rtol=1e-12)
    np.testing.assert_allclose(fn.layer_norm_inverse(y, mu, std).numpy(),
                               (y.numpy() * ref_std + ref_mu), rtol=1e-12)


def test_l2_loss_of_an_exactly_reconstructed_row_has_a_finite_gradient():
    """The norm's gradient at a zero error would be 0 * inf = NaN in every weight; it is 0 there, and every other
    row's gradient is the plain norm's."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    x_hat = (x + 0.1 * torch.randn(4, 6, generator=g, dtype=torch.float64)).requires_grad_()
    with torch.no_grad():
        x_hat[1] = x[1]
    fn.reconstruction_loss(fn.squared_error(x, x_hat), "l2").backward()
    assert torch.isfinite(x_hat.grad).all() and torch.equal(x_hat.grad[1], torch.zeros(6, dtype=torch.float64))
    e = (x_hat - x).detach()
    ref = e / e.norm(dim=-1, keepdim=True) / 4
    assert torch.allclose(x_hat.grad[[0, 2, 3]], ref[[0, 2, 3]], rtol=1e-14)
