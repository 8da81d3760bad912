"""A stack of SAEs of one shape against each SAE computed alone, in float64: losses, gradients, member slices."""

import pytest
import torch

from fit import functional as fn
from fit.config import SAEConfig
from fit.sae import SAE
from fit.stack import SAEStack

D = 12
MIX = [
    SAEConfig(variant="baseline", seed=0),
    SAEConfig(variant="hier", groups=3, gamma=2.0, seed=1),
    SAEConfig(variant="hier", norm="store_stats", seed=2, l1=0.1),
    SAEConfig(variant="baseline", norm="none", recon="l2", seed=3),
    SAEConfig(variant="hier", groups=4, recon="l2", seed=4),
]


def saes(cfgs, mean, std):
    out = []
    for c in cfgs:
        sae = SAE(c, D, store_mean=mean, store_std=std).double()
        with torch.no_grad():  # away from the tied initialisation, so every weight matters
            for p in sae.parameters():
                p.add_(0.1 * torch.randn_like(p))
        out.append(sae)
    return out


def alone_loss(sae: SAE, x: torch.Tensor, l1_scale: float) -> torch.Tensor:
    """One SAE's training loss written out from the plain functions."""
    x_n = sae.normalise(x).x_BD
    z = torch.relu(x_n @ sae.W_enc + sae.b_enc)
    sq = ((x_n - (z @ sae.W_dec + sae.b_dec)) ** 2).sum(-1)
    recon = sq.mean() if sae.cfg.recon == "mse" else sq.sqrt().mean()
    return recon + l1_scale * (z.abs() * sae.w_F).sum(-1).mean()


@pytest.mark.parametrize("cfgs", [MIX, MIX[:2]], ids=["mixed norms and losses", "one norm"])
def test_stacked_losses_and_gradients_equal_each_sae_alone(cfgs):
    torch.manual_seed(0)
    mean, std = torch.randn(D, dtype=torch.float64), torch.rand(D, dtype=torch.float64) + 0.5
    x = torch.randn(40, D, dtype=torch.float64) * 3 + mean
    alone = saes(cfgs, mean, std)
    stack = SAEStack(alone).double()
    x_n = stack.inputs(x, {})
    assert x_n.shape[0] == (1 if len({c.norm for c in cfgs}) == 1 else len(cfgs))
    loss_M, parts = stack(x_n, 0.7)
    loss_M.sum().backward()
    for m, sae in enumerate(alone):
        ref = alone_loss(sae, x, 0.7)
        ref.backward()
        assert torch.allclose(loss_M[m], ref, rtol=1e-12), sae.cfg.name
        assert torch.allclose(parts["recon"][m] + 0.7 * parts["penalty"][m], ref, rtol=1e-12)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.allclose(getattr(stack, name).grad[m], getattr(sae, name).grad, rtol=1e-10, atol=1e-12), (
                sae.cfg.name, name)


def test_a_member_slice_is_its_sae_and_loads_back():
    torch.manual_seed(1)
    mean, std = torch.randn(D), torch.rand(D) + 0.5
    alone = [s.float() for s in saes(MIX, mean.double(), std.double())]
    stack = SAEStack(alone)
    for m, sae in enumerate(alone):
        state = stack.member_state(m)
        assert state.keys() == sae.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in sae.state_dict().items())
        rebuilt = stack.member_sae(m)
        x = torch.randn(5, D) + mean
        assert torch.equal(rebuilt(x), sae(x))
    other = SAEStack([s.float() for s in saes(MIX, mean.double(), std.double())])
    for m in range(len(MIX)):
        other.load_member(m, stack.member_state(m))
    assert all(torch.equal(a, b) for a, b in zip(stack.state_dict().values(), other.state_dict().values(),
                                                   strict=True))


def test_a_stack_refuses_saes_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        SAEStack([SAE(SAEConfig(), D), SAE(SAEConfig(expansion=2.0), D)])


def test_penalty_and_reconstruction_broadcast_over_members():
    z = torch.rand(3, 7, 5, dtype=torch.float64)
    w = torch.rand(3, 5, dtype=torch.float64)
    sq = torch.rand(3, 7, dtype=torch.float64)
    for m in range(3):
        assert torch.allclose(fn.relu_penalty(z, w)[m], (z[m] * w[m]).sum(-1).mean(), rtol=1e-14)
        assert torch.allclose(fn.reconstruction_loss(sq, "l2")[m], fn.reconstruction_loss(sq[m], "l2"), rtol=1e-14)
