"""ReLU latents with a per-latent weighted L1 penalty: the paper's ``baseline`` (uniform weight ``l1``) and ``hier``
(group k of K weighted ``l1 * gamma**(k-1)``), which differ in the weights ``w_F`` alone and train in one stack.

Loss: ``recon + l1_scale * mean_rows sum_j w_j z_j``. With ``Batch.pairs`` the step goes through the active
(row, latent) pairs (:mod:`fit.sparse`), the same function computed from fewer products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fit import functional as fn
from fit import sparse
from fit.architectures.base import Batch, Buffers, Output, decode
from fit.errors import FitError


@dataclass(frozen=True)
class BaselineFields:
    """The baseline's field: one L1 weight for every latent."""

    l1: float = 0.04
    """The L1 weight lambda (the paper's 0.04)."""
    groups: int = field(default=1, init=False)
    """One penalty group: the weight is uniform."""
    gamma: float = field(default=1.0, init=False)

    def __post_init__(self) -> None:
        if self.l1 < 0:
            raise FitError(f"the L1 weight must be non-negative, got --l1 {self.l1}")


@dataclass(frozen=True)
class HierFields(BaselineFields):
    """The hierarchical SAE's fields: group k of K weighted ``l1 * gamma**(k-1)``."""

    groups: int = 5
    """K, the number of equal latent groups (the paper's 5)."""
    gamma: float = 1.5
    """The penalty multiplier between consecutive groups (the paper's 1.5)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups < 1 or self.gamma <= 0:
            raise FitError(f"the grouped penalty needs -K >= 1 and --gamma > 0, got K={self.groups}, "
                           f"gamma={self.gamma}")


class ReLUL1:
    name = "relu-l1"
    saelens = "standard"
    """The SAELens architecture that computes this one at inference (:mod:`fit.export`): ReLU(x W_enc + b_enc)."""
    sparse_latents = False

    def __init__(self, cfg: BaselineFields, n_latents: int) -> None:
        self.cfg, self.n_latents = cfg, n_latents
        self.key: tuple = (self.name,)
        self.group_bounds = fn.group_bounds(n_latents, cfg.groups)

    def buffers(self) -> Buffers:
        return {"w_F": fn.penalty_weights(self.n_latents, self.cfg.l1, self.cfg.groups, self.cfg.gamma).float()}

    def encode(self, x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        return fn.encode(x_n, W_enc, b_enc)

    def latents(self, batch: Batch) -> torch.Tensor | sparse.Pairs:
        """The training latents: dense, or the positive pre-activations as pairs."""
        if batch.pairs:
            return sparse.encode_pairs(batch.x_n, batch.W_enc, batch.b_enc, sparse.relu_pairs)
        return fn.encode(batch.x_n, batch.W_enc, batch.b_enc)

    def penalty(self, z: torch.Tensor | sparse.Pairs, w_F: torch.Tensor) -> torch.Tensor:
        if isinstance(z, sparse.Pairs):
            return sparse.weighted_l1(z, w_F)
        return fn.relu_penalty(z, w_F)

    def loss(self, batch: Batch) -> Output:
        z = self.latents(batch)
        x_hat = decode(z, batch.W_dec, batch.b_dec)
        sq = fn.squared_error(batch.x_n, x_hat)
        recon = batch.recon(sq)
        penalty = self.penalty(z, batch.buffers["w_F"])
        return Output(recon + batch.l1_scale * penalty, z, sq, {"recon": recon, "penalty": penalty})
