"""The SAE module: input normalisation, the architecture's encoder, linear decoder with unit-norm rows.

Every architecture (:mod:`fit.architectures`) is this one class: what differs (encoder activation, loss, buffers such
as the penalty weights ``w_F`` or BatchTopK's ``threshold``) is its ``arch``. Training runs SAEs as stacks
(:mod:`fit.stack`), whose members' slices are exactly this module's tensors; this module is what a finished SAE is
loaded, evaluated, browsed and exported as.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from fit import functional as fn
from fit.architectures import architecture
from fit.config import SAEConfig


@dataclass
class Normalised:
    """The SAE's input space and how to leave it: x_n = (x - shift) / scale, per row or per dimension."""

    x_BD: torch.Tensor
    shift: torch.Tensor  # (B, 1) for layer norm, (D,) for store statistics, 0-dim zero for none
    scale: torch.Tensor

    def inverse(self, y_BD: torch.Tensor) -> torch.Tensor:
        return y_BD * self.scale + self.shift


def normalise(x_BD: torch.Tensor, norm: str, mean_D: torch.Tensor | None = None,
              std_D: torch.Tensor | None = None) -> Normalised:
    """``x_BD`` in the input space of normalisation ``norm`` (``mean_D``/``std_D``: the store's, for
    ``store_stats``, already clamped as the SAE keeps them)."""
    if norm == "layer_norm":
        x_n, mu, std = fn.layer_norm(x_BD)
        return Normalised(x_n, mu, std)
    if norm == "store_stats":
        return Normalised((x_BD - mean_D) / std_D, mean_D, std_D)
    zero = x_BD.new_zeros(())
    return Normalised(x_BD, zero, zero + 1)


def init_seed(seed: int) -> int:
    """The generator seed of an SAE's initial weights: ``seed`` hashed, not ``seed`` itself, so that the initial
    decoder is never another generator's draw from the same seed. (Seeded plainly, an SAE of width n at seed s started
    as the first n directions of a synthetic dictionary built at seed s, SAELens's and SynthSAEBench's 42 included,
    and scored as if it had learned them.)"""
    return int.from_bytes(hashlib.sha256(f"hfg-sae/init/{seed}".encode()).digest()[:8], "little") >> 1


def clamped_std(std_D: torch.Tensor) -> torch.Tensor:
    """The store's standard deviation as ``store_stats`` divides by it (a constant dimension must not divide by 0)."""
    return std_D.float().clamp_min(1e-6)


class SAE(nn.Module):
    def __init__(self, cfg: SAEConfig, d_model: int, *, store_mean: torch.Tensor | None = None,
                 store_std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        self.n_latents = n = cfg.n_latents(d_model)
        self.arch = architecture(cfg.variant, cfg.arch_fields, n)
        g = torch.Generator().manual_seed(init_seed(cfg.seed))
        W_dec = fn.unit_rows(torch.randn(n, d_model, generator=g))
        self.W_enc = nn.Parameter(W_dec.T.clone().contiguous())  # D x F: tied at initialisation
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(W_dec)  # F x D, unit-norm rows
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        own = self.arch.buffers()
        self.arch_buffers = tuple(own)  # saved with the weights; a stack stacks them per member
        for name, value in own.items():
            self.register_buffer(name, value)
        if "w_F" not in own:
            # No L1 penalty: zero weights, not saved, so whatever reports an SAE's penalty reports 0 for it.
            self.register_buffer("w_F", torch.zeros(n), persistent=False)
        if cfg.norm == "store_stats":
            if store_mean is None or store_std is None:
                raise ValueError("norm='store_stats' needs the store's per-dimension mean and std")
            self.register_buffer("norm_mean", store_mean.float().clone())
            self.register_buffer("norm_std", clamped_std(store_std))
        elif cfg.norm == "none" and store_mean is not None:
            with torch.no_grad():
                self.b_dec.copy_(store_mean.float())  # start the decoder at the data mean

    @property
    def group_bounds(self) -> list[tuple[int, int]]:
        """[start, stop) of each latent group its metrics report (penalty groups; Matryoshka's prefix segments)."""
        return [tuple(b) for b in self.arch.group_bounds]

    def normalise(self, x_BD: torch.Tensor) -> Normalised:
        stats = (self.norm_mean, self.norm_std) if self.cfg.norm == "store_stats" else (None, None)
        return normalise(x_BD, self.cfg.norm, *stats)

    def encode(self, x_n_BD: torch.Tensor) -> torch.Tensor:
        """Inference latents of normalised rows (BatchTopK and Matryoshka: above the threshold estimated in
        training)."""
        return self.arch.encode(x_n_BD, self.W_enc, self.b_enc, dict(self.named_buffers()))

    def decoder_directions(self) -> torch.Tensor:
        """(F, D): each latent's decoder row in activation space, up to a positive scale per input row.

        Layer norm rescales each input row by a positive scalar (its standard deviation) and shifts it along the
        all-ones vector: the direction is the row itself. Store statistics scale each dimension by the store's
        standard deviation, which changes the direction; without normalisation the row is the direction.
        """
        W = self.W_dec.detach().float()
        if self.cfg.norm == "store_stats":
            W = W * self.norm_std
        return W

    def decode(self, z_BF: torch.Tensor) -> torch.Tensor:
        return fn.decode(z_BF, self.W_dec, self.b_dec)

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw activations (normalise, encode, decode, de-normalise)."""
        norm = self.normalise(x_BD)
        return norm.inverse(self.decode(self.encode(norm.x_BD)))
