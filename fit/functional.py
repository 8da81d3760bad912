"""The SAE's math as plain functions of tensors, so each can be checked against a float64 reference.

Shapes: B rows in a batch, D = d_model, F = number of latents (features), K groups. The functions broadcast
over leading dimensions, so the same code serves one SAE and a stack of M SAEs (members first: x_n (1 or M, B, D),
W_enc (M, D, F), biases (M, 1, F), per-latent weights (M, F)).
"""

from __future__ import annotations

import torch

LN_EPS = 1e-5
"""SAELens's layer-norm epsilon (added to the standard deviation), so exported SAEs behave identically there."""


def group_sizes(n: int, groups: int) -> list[int]:
    """Sizes of K contiguous groups over n latents: as equal as possible, the first n % K groups one larger."""
    if groups <= 0 or n < groups:
        raise ValueError(f"cannot split {n} latents into {groups} non-empty groups")
    base, extra = divmod(n, groups)
    return [base + (1 if g < extra else 0) for g in range(groups)]


def group_bounds(n: int, groups: int) -> list[tuple[int, int]]:
    """[start, stop) of each group, in order."""
    bounds, start = [], 0
    for size in group_sizes(n, groups):
        bounds.append((start, start + size))
        start += size
    return bounds


def penalty_weights(n: int, l1: float, groups: int = 1, gamma: float = 1.0) -> torch.Tensor:
    """Per-latent L1 weights w_F: group k (1-based) of K gets l1 * gamma**(k - 1).

    groups=1 (or gamma=1) is the uniform baseline penalty.
    """
    w_F = torch.empty(n, dtype=torch.float64)
    for g, (start, stop) in enumerate(group_bounds(n, groups)):
        w_F[start:stop] = l1 * gamma**g
    return w_F


def layer_norm(x_BD: torch.Tensor, eps: float = LN_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x - mean) / (std + eps) per row, std unbiased: SAELens's ``layer_norm`` activation normalisation.

    Returns the normalised rows and each row's mean and std (B, 1), which :func:`layer_norm_inverse` needs.
    """
    mu_B1 = x_BD.mean(dim=-1, keepdim=True)
    centered = x_BD - mu_B1
    std_B1 = centered.std(dim=-1, keepdim=True)
    return centered / (std_B1 + eps), mu_B1, std_B1


def layer_norm_inverse(y_BD: torch.Tensor, mu_B1: torch.Tensor, std_B1: torch.Tensor) -> torch.Tensor:
    """Back to activation space, as SAELens does it (x * std + mean)."""
    return y_BD * std_B1 + mu_B1


def encode(x_BD: torch.Tensor, W_enc_DF: torch.Tensor, b_enc_F: torch.Tensor) -> torch.Tensor:
    """E(x) = ReLU(x W_enc + b_enc) (W_enc is the transpose of the paper's W_e)."""
    return torch.relu(x_BD @ W_enc_DF + b_enc_F)


def decode(z_BF: torch.Tensor, W_dec_FD: torch.Tensor, b_dec_D: torch.Tensor) -> torch.Tensor:
    """D(z) = z W_dec + b_dec; row j of W_dec is latent j's unit-norm decoder direction."""
    return z_BF @ W_dec_FD + b_dec_D


def squared_error(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """||x - x_hat||^2 per row (any leading dimensions: a stack of SAEs has its members first)."""
    return (x_BD - x_hat_BD).pow(2).sum(dim=-1)


def reconstruction_loss(sq_B: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean over rows (the last dimension) of the rows' squared errors ``sq_B`` (``mse``, the paper's) or of
    their square roots, the unsquared norms (``l2``).

    A row reconstructed exactly (error 0, e.g. a constant row under layer norm at initialisation) would make the
    norm's gradient 0 * inf = NaN in every weight; below the dtype's smallest normal number the norm is taken there
    (a value below 1e-19 in float32) and its gradient is 0, the norm's minimal subgradient at 0."""
    if kind == "mse":
        return sq_B.mean(dim=-1)
    if kind == "l2":
        return sq_B.clamp_min(torch.finfo(sq_B.dtype).tiny).sqrt().mean(dim=-1)
    raise ValueError(f"unknown reconstruction loss {kind!r}: use 'mse' or 'l2'")


def relu_penalty(z_BF: torch.Tensor, w_F: torch.Tensor) -> torch.Tensor:
    """Mean over rows of sum_j w_j |z_j| for non-negative (ReLU) latents, where |z| = z: one matrix-vector product
    per member (``z (M, B, F)``, ``w (M, F)``) rather than three passes over the latents and their backward; the
    gradient is the same wherever the ReLU passes one."""
    return (z_BF @ w_F.unsqueeze(-1)).squeeze(-1).mean(dim=-1)


def remove_parallel_component(grad_FD: torch.Tensor, W_FD: torch.Tensor) -> torch.Tensor:
    """The gradient with each row's component along that (unit-norm) row of W removed."""
    return grad_FD - (grad_FD * W_FD).sum(dim=-1, keepdim=True) * W_FD


def unit_rows(W_FD: torch.Tensor) -> torch.Tensor:
    """W with every row scaled to unit L2 norm."""
    return W_FD / W_FD.norm(dim=-1, keepdim=True)
