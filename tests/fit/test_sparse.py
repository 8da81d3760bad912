"""The pair path (fit/sparse.py) against the dense computation: the same latents, reconstruction and gradients of
every parameter, with and without a member dimension, at k=1 and k=F, with rows that have no active latent."""

from __future__ import annotations

import pytest
import torch

from fit import functional as fn
from fit import sparse as sp


def _params(M: int | None, B: int, D: int, F: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    lead = () if M is None else (M,)
    bias = () if M is None else (M, 1)
    x = rand(*(() if M is None else (1,)), B, D)
    x[0 if M is None else (0, 0)] = 0  # a zero row: its pre-activations are b_enc (all negative: no active latent)
    b_enc = rand(*bias, F) * 0.1
    params = [rand(*lead, D, F), b_enc, fn.unit_rows(rand(*lead, F, D)), rand(*bias, D)]
    return x, [p.requires_grad_() for p in params]


def _zero_row_bias(b_enc):
    """A negative bias: every latent is off on the zero row (the other rows still vary)."""
    with torch.no_grad():
        b_enc.copy_(-b_enc.abs() - 0.05)


def _dense_step(x, W_enc, b_enc, W_dec, b_dec, select, w_F):
    """The dense computation of the same SAE: z = pre on the chosen set (ReLU'd), a dense decoder."""
    pre = torch.matmul(x, W_enc) + b_enc
    chosen = select(pre.detach())
    z = torch.where(sp.dense(sp.Pairs((chosen.vals != 0).to(pre.dtype), chosen.idx), pre.shape[-1]) > 0, pre, 0.0)
    x_hat = fn.decode(z, W_dec, b_dec)
    loss = fn.squared_error(x, x_hat).mean(-1) + fn.relu_penalty(z, w_F)
    return z, x_hat, loss.sum()


def _pair_step(x, W_enc, b_enc, W_dec, b_dec, select, w_F):
    pairs = sp.encode_pairs(x, W_enc, b_enc, select)
    x_hat = sp.decode_pairs(pairs, W_dec, b_dec)
    loss = fn.squared_error(x, x_hat).mean(-1) + sp.weighted_l1(pairs, w_F)
    return pairs, x_hat, loss.sum()


SELECTIONS = {
    "topk-1": lambda pre: sp.topk_pairs(pre, 1),
    "topk-5": lambda pre: sp.topk_pairs(pre, 5),
    "topk-F": lambda pre: sp.topk_pairs(pre, pre.shape[-1]),
    "batchtopk-3": lambda pre: sp.batch_topk_pairs(pre, 3),
    "relu": sp.relu_pairs,
    "threshold": lambda pre: sp.threshold_pairs(pre, 0.3),
}


@pytest.mark.parametrize("compact", [0.0, 1.01], ids=["padded", "compacted"])
@pytest.mark.parametrize("M", [None, 3])
@pytest.mark.parametrize("name", sorted(SELECTIONS))
@pytest.mark.parametrize("shape", [(9, 6, 13), (33, 16, 40)])
def test_pairs_equal_the_dense_step_forward_and_backward(M, name, shape, compact, monkeypatch):
    monkeypatch.setattr(sp, "COMPACT_BELOW", compact)  # the kernels with padding slots kept, and with them dropped
    B, D, F = shape
    select = SELECTIONS[name]
    x, params = _params(M, B, D, F, seed=B + F)
    _zero_row_bias(params[1]) if name == "relu" else None
    w_F = torch.rand(*(() if M is None else (M,)), F)
    z, x_hat, loss = _dense_step(x, *params, select, w_F)
    dense_grads = torch.autograd.grad(loss, params)
    pairs, x_hat_p, loss_p = _pair_step(x, *params, select, w_F)
    pair_grads = torch.autograd.grad(loss_p, params)
    torch.testing.assert_close(sp.dense(pairs, F), z.detach())
    torch.testing.assert_close(x_hat_p, x_hat)
    torch.testing.assert_close(loss_p, loss)
    for name_, a, b in zip(("W_enc", "b_enc", "W_dec", "b_dec"), pair_grads, dense_grads, strict=True):
        assert a.shape == b.shape, name_
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name_: f"{n}: {m}")
    # Indices are distinct within a row, and every padding slot is 0.
    idx = pairs.idx.reshape(-1, pairs.idx.shape[-1])
    active = pairs.vals.reshape(idx.shape) != 0
    for r in range(idx.shape[0]):
        assert idx[r][active[r]].unique().numel() == int(active[r].sum())


def test_rows_without_an_active_latent_get_no_slot_and_no_gradient():
    x, params = _params(None, 8, 6, 10)
    _zero_row_bias(params[1])
    pairs = sp.encode_pairs(x, params[0], params[1], sp.relu_pairs)
    assert sp.l0(pairs)[0] == 0 and sp.l0(pairs)[1:].min() > 0
    x_hat = sp.decode_pairs(pairs, params[2], params[3])
    torch.testing.assert_close(x_hat[0], params[3].detach())  # the zero row decodes to b_dec alone
    # A loss on the empty row only: nothing reaches the encoder.
    dW_enc, db_enc = torch.autograd.grad(x_hat[0].sum(), params[:2], allow_unused=True)
    assert (dW_enc is None or not dW_enc.any()) and (db_enc is None or not db_enc.any())


def test_selections_choose_what_their_definitions_say():
    pre = torch.randn(2, 16, 30)
    top = sp.topk_pairs(pre, 4)
    torch.testing.assert_close(sp.dense(top, 30), torch.relu(pre) * (pre >= pre.topk(4, -1).values[..., -1:]))
    bt = sp.batch_topk_pairs(pre, 4)
    assert sp.l0(bt).sum(-1).tolist() == [64.0, 64.0]  # k * B per member (the top 64 of 480 are positive here)
    kth = pre.reshape(2, -1).topk(64, -1).values[:, -1].view(2, 1, 1)
    torch.testing.assert_close(sp.dense(bt, 30), pre * (pre >= kth))
    torch.testing.assert_close(sp.dense(sp.relu_pairs(pre), 30), torch.relu(pre))
    theta = torch.tensor([0.5, 1.0]).view(2, 1, 1)
    torch.testing.assert_close(sp.dense(sp.threshold_pairs(pre, theta), 30), pre * (pre > theta))
    assert sp.relu_pairs(-pre.abs()).vals.shape == (2, 16, 1)  # all rows empty: one padding slot


def test_weighted_l1_and_prefix_match_their_dense_counterparts():
    x, (W_enc, b_enc, W_dec, b_dec) = _params(3, 12, 8, 20)
    w_F = torch.rand(3, 20)
    pairs = sp.encode_pairs(x, W_enc, b_enc, lambda pre: sp.topk_pairs(pre, 6))
    z = sp.dense(pairs, 20)
    torch.testing.assert_close(sp.weighted_l1(pairs, w_F), fn.relu_penalty(z, w_F))
    torch.testing.assert_close(sp.weighted_l1(sp.Pairs(pairs.vals[0], pairs.idx[0]), w_F[0]),
                               fn.relu_penalty(z[0], w_F[0]))
    torch.testing.assert_close(sp.decode_pairs(sp.prefix(pairs, 7), W_dec, b_dec),
                               z[..., :7] @ W_dec[:, :7] + b_dec)


def test_two_selections_from_one_encoder_sum_their_gradients():
    """AuxK's use: the main latents and a second set (the top 2 among 'dead' latents) from the same pre."""
    x, (W_enc, b_enc, W_dec, b_dec) = _params(2, 10, 6, 15, dtype=torch.float64)
    dead = torch.arange(15) >= 9

    def select(pre):
        return sp.topk_pairs(pre, 3), sp.topk_pairs(pre.masked_fill(~dead, float("-inf")), 2)

    main, aux = sp.encode_pairs(x, W_enc, b_enc, select)
    assert (aux.idx >= 9).all()
    loss = sp.decode_pairs(main, W_dec, b_dec).pow(2).sum() + (sp.decode_pairs(aux, W_dec, b_dec) - x).pow(2).sum()
    grads = torch.autograd.grad(loss, (W_enc, b_enc))
    pre = torch.matmul(x, W_enc) + b_enc
    z_main = torch.where(sp.dense(main, 15).detach() != 0, pre, 0.0)
    z_aux = torch.where(sp.dense(aux, 15).detach() != 0, pre, 0.0)
    ref = (z_main @ W_dec + b_dec).pow(2).sum() + (z_aux @ W_dec + b_dec - x).pow(2).sum()
    for a, b in zip(grads, torch.autograd.grad(ref, (W_enc, b_enc)), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("M", [None, 2])
def test_gradcheck_float64(M):
    x, (W_enc, b_enc, W_dec, b_dec) = _params(M, 5, 4, 7, dtype=torch.float64, seed=3)

    def encode(W_enc, b_enc):
        return sp.encode_pairs(x, W_enc, b_enc, lambda pre: sp.topk_pairs(pre, 3)).vals

    assert torch.autograd.gradcheck(encode, (W_enc, b_enc))
    pairs = sp.encode_pairs(x, W_enc, b_enc, lambda pre: sp.topk_pairs(pre, 3))
    vals = (pairs.vals.detach().abs() + 0.1).requires_grad_()  # no zero (padding) slot: every value matters

    def decode(vals, W_dec, b_dec):
        return sp.decode_pairs(sp.Pairs(vals, pairs.idx), W_dec, b_dec)

    assert torch.autograd.gradcheck(decode, (vals, W_dec, b_dec))


def test_data_needing_a_gradient_is_refused():
    x, (W_enc, b_enc, _, _) = _params(None, 4, 3, 5)
    with pytest.raises(ValueError, match="x_n must not need a gradient"):
        sp.encode_pairs(x.requires_grad_(), W_enc, b_enc, sp.relu_pairs)


def test_the_sparse_bench_measures_every_figure_at_its_quick_size():
    """benchmarks/sparse_bench.py at its tiny size, so the script cannot rot (its figures are measured by `make
    bench`, never asserted here)."""
    from benchmarks.common import BenchReport
    from benchmarks.sparse_bench import run

    report = BenchReport()
    run(report, quick=True, threads=1)
    names = [f.name for f in report.figures]
    assert names[0].startswith("TopK k=8 d=64 n=256") and names[1].startswith("ReLU-L1 d=n=64 at L0")
    assert "ReLU-L1 dense step vs a plain-PyTorch loop (d=n=64)" in names and len(names) == 5
    assert all(f.ours > 0 and f.baseline > 0 and f.unit == "tok/s" for f in report.figures)
    assert "L0 8.0" in report.figures[0].note  # TopK's measured L0 is k
