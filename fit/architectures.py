"""SAE architectures: the part of an SAE that differs between kinds of SAE, by variant name.

An architecture says how latents come from the normalised input (``encode``), what they cost (``penalty``), and
which per-SAE tensors it keeps beside the weights (``buffers``, saved in sae.safetensors). Everything else is
shared and lives elsewhere: input normalisation and the unit-norm linear decoder (:mod:`fit.sae`), the
reconstruction loss and the batched training of many SAEs of one shape (:mod:`fit.stack`), the constrained
optimiser (:mod:`fit.optim`). Both ``encode`` and ``penalty`` broadcast over leading dimensions, so one definition
serves a single SAE (``x (B, D)``, ``W_enc (D, F)``, ``w_F (F,)``) and a stack of M of them (``x (1 or M, B, D)``,
``W_enc (M, D, F)``, ``b_enc (M, 1, F)``, buffers as stored, members first: ``w_F (M, F)``). A new architecture is
one more class and one line in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from fit import functional as fn
from fit.config import SAEConfig

Buffers = dict[str, torch.Tensor]


class Architecture(Protocol):
    name: str
    """Its name (SAEs of one shape and one architecture train as one stack)."""

    def buffers(self, cfg: SAEConfig, n_latents: int) -> Buffers:
        """The SAE's own constant tensors (float32, latents last), saved with its weights."""

    def encode(self, x_BD: torch.Tensor, W_enc_DF: torch.Tensor, b_enc_F: torch.Tensor,
               buffers: Buffers) -> torch.Tensor:
        """Latents z of the normalised rows."""

    def penalty(self, z_BF: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        """The sparsity cost, a mean over rows (one value per leading index)."""


class ReLUL1:
    """ReLU latents with a per-latent weighted L1 penalty: ``w_F`` uniform for ``baseline``, ``l1 * gamma**(k-1)``
    in group k for ``hier``, so the two differ in ``w_F`` alone and train in one stack."""

    name = "relu-l1"

    def buffers(self, cfg: SAEConfig, n_latents: int) -> Buffers:
        return {"w_F": fn.penalty_weights(n_latents, cfg.l1, cfg.groups, cfg.gamma).float()}

    def encode(self, x_BD: torch.Tensor, W_enc_DF: torch.Tensor, b_enc_F: torch.Tensor,
               buffers: Buffers) -> torch.Tensor:
        return fn.encode(x_BD, W_enc_DF, b_enc_F)

    def penalty(self, z_BF: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        return fn.relu_penalty(z_BF, buffers["w_F"])


RELU_L1 = ReLUL1()

ARCHITECTURES: dict[str, Architecture] = {"baseline": RELU_L1, "hier": RELU_L1}
"""The architecture of each variant (``SAEConfig.variant``)."""
