"""Matryoshka SAEs (Bussmann et al. 2025; Nabeshima 2024): nested prefixes of the dictionary each reconstruct the
input on their own.

- ``matryoshka``: BatchTopK latents (and threshold, and optional AuxK); the reconstruction term is the **mean** over
  prefixes ``[0, end)`` of each prefix's reconstruction loss (its own ``x_hat = z[:end] W_dec[:end] + b_dec``), as
  dictionary_learning's ``MatryoshkaBatchTopKTrainer`` (the paper's reference code) weighs them by default (uniform
  weights summing to 1; the paper's equation writes the sum, P times this). AuxK, when on, explains the whole
  dictionary's residual.
- ``hier-matryoshka``: the ``hier`` SAE (ReLU, group-L1 weights ``l1 * gamma**(k-1)``) with the same prefix
  reconstruction term instead of the plain one: the ablation separating ordered penalties from nested
  reconstruction.

Prefix ends: ``prefixes``, else the ends of the K groups of ``groups`` (the hierarchical SAE's), so the
two are compared group for group; the whole dictionary is always the last prefix. Metrics per group are per
segment between consecutive ends (matryoshka) or per penalty group (hier-matryoshka).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fit import functional as fn
from fit.architectures.base import Batch, Latents, Output, check_prefixes, prefix_ends, prefix_losses, segments
from fit.architectures.batchtopk import BatchTopKFamily
from fit.architectures.relu_l1 import HierFields, ReLUL1
from fit.architectures.topk import TopKFields
from fit.errors import FitError


@dataclass(frozen=True)
class MatryoshkaFields(TopKFields):
    """BatchTopK's fields and where the prefixes end."""

    groups: int = 5
    """Prefixes end at the ends of K equal groups, the hierarchical SAE's (unless ``prefixes`` is given)."""
    prefixes: tuple[int, ...] = ()
    """Prefix ends as latent counts, increasing; empty: the ends of the K groups."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups < 1:
            raise FitError(f"-K must be at least 1, got {self.groups}")
        check_prefixes(self)


@dataclass(frozen=True)
class HierMatryoshkaFields(HierFields):
    """The hierarchical SAE's fields and where the prefixes end."""

    prefixes: tuple[int, ...] = ()
    """Prefix ends as latent counts, increasing; empty: the ends of the K groups."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_prefixes(self)


class Matryoshka(BatchTopKFamily):
    name = "matryoshka"

    def __init__(self, cfg: MatryoshkaFields, n_latents: int) -> None:
        super().__init__(cfg, n_latents)
        self.ends = prefix_ends(cfg, n_latents)
        self.key = (*self.key, tuple(self.ends))
        self.group_bounds = segments(self.ends)

    def reconstruction(self, batch: Batch, z: Latents) -> tuple[torch.Tensor, torch.Tensor]:
        mean_loss, x_hat = prefix_losses(batch, z, self.ends)
        return x_hat, mean_loss


class HierMatryoshka(ReLUL1):
    name = "hier-matryoshka"

    def __init__(self, cfg: HierMatryoshkaFields, n_latents: int) -> None:
        super().__init__(cfg, n_latents)
        self.ends = prefix_ends(cfg, n_latents)
        self.key = (self.name, tuple(self.ends))

    def loss(self, batch: Batch) -> Output:
        z = self.latents(batch)
        mean_loss, x_hat = prefix_losses(batch, z, self.ends)
        sq = fn.squared_error(batch.x_n, x_hat)
        penalty = self.penalty(z, batch.buffers["w_F"])
        terms = {"recon": batch.recon(sq), "penalty": penalty, "prefix_recon": mean_loss}
        return Output(mean_loss + batch.l1_scale * penalty, z, sq, terms)
