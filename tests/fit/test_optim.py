import torch

from fit import functional as F
from fit.optim import ConstrainedAdamW


def test_gradient_parallel_component_is_removed():
    W = F.unit_rows(torch.randn(6, 4, dtype=torch.float64))
    g = torch.randn(6, 4, dtype=torch.float64)
    p = F.remove_parallel_component(g, W)
    assert torch.allclose((p * W).sum(-1), torch.zeros(6, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(p + (g * W).sum(-1, keepdim=True) * W, g)


def test_constrained_step_keeps_unit_rows_and_matches_a_hand_computed_step():
    torch.manual_seed(0)
    W0 = F.unit_rows(torch.randn(5, 3, dtype=torch.float64))
    W = torch.nn.Parameter(W0.clone())
    grad = torch.randn(5, 3, dtype=torch.float64)
    W.grad = grad.clone()
    lr, wd, eps = 0.01, 0.1, 1e-8
    opt = ConstrainedAdamW([W], [W], lr=lr, weight_decay=wd, eps=eps, betas=(0.9, 0.999))
    opt.step()
    # by hand: project, AdamW's first step (bias-corrected m/sqrt(v) = g/|g|), decoupled decay, renormalise
    g = grad - (grad * W0).sum(-1, keepdim=True) * W0
    m_hat, v_hat = g, g * g
    stepped = W0 * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + eps)
    expected = stepped / stepped.norm(dim=-1, keepdim=True)
    assert torch.allclose(W.detach(), expected, atol=1e-12)
    assert torch.allclose(W.norm(dim=-1), torch.ones(5, dtype=torch.float64), atol=1e-12)

    for _ in range(20):  # and it stays on the sphere over many steps
        W.grad = torch.randn(5, 3, dtype=torch.float64)
        opt.step()
    assert torch.allclose(W.norm(dim=-1), torch.ones(5, dtype=torch.float64), atol=1e-12)
