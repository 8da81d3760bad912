"""The SAE module: input normalisation, ReLU encoder, linear decoder with unit-norm rows, per-latent L1 weights.

Baseline and hierarchical SAEs are the same class; only the penalty vector ``w_F`` differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fit import functional as fn
from fit.config import SAEConfig


@dataclass
class Normalised:
    """The SAE's input space and how to leave it: x_n = (x - shift) / scale, per row or per dimension."""

    x_BD: torch.Tensor
    shift: torch.Tensor  # (B, 1) for layer norm, (D,) for store statistics, 0-dim zero for none
    scale: torch.Tensor

    def inverse(self, y_BD: torch.Tensor) -> torch.Tensor:
        return y_BD * self.scale + self.shift


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig, d_model: int, *, store_mean: torch.Tensor | None = None,
                 store_std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        self.n_latents = n = cfg.n_latents(d_model)
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = fn.unit_rows(torch.randn(n, d_model, generator=g))
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())  # D x F: tied at initialisation
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(W_dec)  # F x D, unit-norm rows
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("w_F", fn.penalty_weights(n, cfg.l1, cfg.groups, cfg.gamma).float())
        if cfg.norm == "store_stats":
            if store_mean is None or store_std is None:
                raise ValueError("norm='store_stats' needs the store's per-dimension mean and std")
            self.register_buffer("norm_mean", store_mean.float().clone())
            self.register_buffer("norm_std", store_std.float().clamp_min(1e-6).clone())
        elif cfg.norm == "none" and store_mean is not None:
            with torch.no_grad():
                self.b_dec.copy_(store_mean.float())  # start the decoder at the data mean

    @property
    def group_bounds(self) -> list[tuple[int, int]]:
        return fn.group_bounds(self.n_latents, self.cfg.groups)

    def normalise(self, x_BD: torch.Tensor) -> Normalised:
        if self.cfg.norm == "layer_norm":
            x_n, mu, std = fn.layer_norm(x_BD)
            return Normalised(x_n, mu, std)
        if self.cfg.norm == "store_stats":
            return Normalised((x_BD - self.norm_mean) / self.norm_std, self.norm_mean, self.norm_std)
        zero = x_BD.new_zeros(())
        return Normalised(x_BD, zero, zero + 1)

    def encode(self, x_n_BD: torch.Tensor) -> torch.Tensor:
        return fn.encode(x_n_BD, self.W_enc, self.b_enc)

    def decode(self, z_BF: torch.Tensor) -> torch.Tensor:
        return fn.decode(z_BF, self.W_dec, self.b_dec)

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw activations (normalise, encode, decode, de-normalise)."""
        norm = self.normalise(x_BD)
        return norm.inverse(self.decode(self.encode(norm.x_BD)))

    def loss(self, norm: Normalised, l1_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss on already-normalised rows (the pass normalises once for all SAEs sharing a norm)."""
        z_BF = self.encode(norm.x_BD)
        x_hat_BD = self.decode(z_BF)
        total, recon, penalty = fn.sae_loss(norm.x_BD, x_hat_BD, z_BF, self.w_F, self.cfg.recon, l1_scale)
        return total, {"recon": recon, "penalty": penalty, "z": z_BF, "x_hat": x_hat_BD}
