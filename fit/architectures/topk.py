"""TopK SAE (Gao et al. 2024): each row keeps its k largest pre-activations (ReLU'd), no sparsity penalty; with
``aux_alpha > 0`` the AuxK loss revives dead latents.

Loss: ``recon + aux_alpha * auxk``. AuxK (Gao et al. 2024, appendix A.2; dictionary_learning's ``TopKTrainer``): a
latent is dead when it has not fired in the last ``dead_tokens`` training rows (counted per SAE in the buffer
``tokens_since_fired_F``, updated with each step's firing before the dead set is read, saved in checkpoints so a
resumed pass counts on exactly); the ``aux_k`` largest dead latents of each row reconstruct the main
reconstruction's residual ``e = x_n - x_hat`` (detached, without ``b_dec``), and ``auxk = mean_rows ||e - e_hat||^2 /
mean_rows ||e - mean(e)||^2``, 0 when no latent is dead. ``aux_k`` is ``min(cfg.aux_k, n // 2)``.

:class:`TopKFamily` is the shared part of TopK, BatchTopK and Matryoshka: a selection of active latents from the
pre-activations, the reconstruction (overridden by Matryoshka's prefixes) and AuxK. The step computes through active
pairs (:mod:`fit.sparse`) unless ``Batch.pairs`` is off (the dense reference, same function).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fit import functional as fn
from fit import sparse
from fit.architectures.base import (
    Batch,
    Buffers,
    Latents,
    Output,
    across_ranks,
    decode,
    fires,
    pre_activations,
    select_dense,
)
from fit.errors import FitError

AUX_K = 512
"""AuxK's dead latents per row by default (Gao et al.'s), capped at half the latents; a value given is never capped
(:meth:`fit.config.SAEConfig.n_latents` refuses one above half)."""


@dataclass(frozen=True)
class TopKFields:
    """The fields every TopK-family SAE takes (TopK and BatchTopK take these alone)."""

    k: int = 64
    """Active latents per row (BatchTopK: per row on average over the batch)."""
    aux_alpha: float = 0.0
    """Weight of the AuxK dead-latent loss (Gao et al. use 1/32); 0 turns it off."""
    aux_k: int = AUX_K
    """AuxK's dead latents per row."""
    dead_tokens: int = 1_000_000
    """Rows without firing after which a latent is dead for AuxK."""
    groups: int = field(default=1, init=False)
    """One group for the per-group metrics."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise FitError(f"--k must be at least 1, got {self.k}")
        if self.aux_alpha < 0 or self.aux_k < 1 or self.dead_tokens < 1:
            raise FitError(f"need --aux-alpha >= 0, --aux-k >= 1 and --dead-tokens >= 1, got {self.aux_alpha}, "
                           f"{self.aux_k} and {self.dead_tokens}")


def aux_k_of(cfg: TopKFields, n_latents: int) -> int:
    """AuxK's latents per row: ``cfg.aux_k``, at most half the dictionary (and at least 1)."""
    return max(1, min(cfg.aux_k, n_latents // 2))


def dead_selection(pre: torch.Tensor, dead_MF: torch.Tensor, aux_k: int) -> sparse.Pairs:
    """The ``aux_k`` largest pre-activations of each row among the dead latents, ReLU'd; a slot that falls on a live
    latent (fewer than ``aux_k`` dead) holds 0."""
    masked = pre.masked_fill(~dead_MF.unsqueeze(-2), float("-inf"))
    vals, idx = torch.topk(masked, aux_k, dim=-1, sorted=False)
    return sparse.Pairs(vals.clamp_min(0), idx)


class TopKFamily:
    """Shared by TopK, BatchTopK and Matryoshka: subclasses say how latents are chosen (:meth:`select`) and, for
    Matryoshka, how the reconstruction loss is made (:meth:`reconstruction`)."""

    name = "topk"
    saelens = "topk"
    """The SAELens architecture that computes this one at inference (:mod:`fit.export`): each row's k largest
    pre-activations, ReLU'd."""
    sparse_latents = True

    def __init__(self, cfg: TopKFields, n_latents: int) -> None:
        self.cfg, self.n_latents = cfg, n_latents
        self.k = cfg.k
        self.aux_alpha = cfg.aux_alpha
        self.aux_k = aux_k_of(cfg, n_latents)
        self.dead_tokens = cfg.dead_tokens
        self.key: tuple = (self.name, self.k, self.aux_alpha, self.aux_k, self.dead_tokens)
        self.group_bounds = fn.group_bounds(n_latents, cfg.groups)

    @property
    def aux(self) -> bool:
        return self.aux_alpha > 0

    def buffers(self) -> Buffers:
        return {"tokens_since_fired_F": torch.zeros(self.n_latents, dtype=torch.int64)} if self.aux else {}

    # --- what subclasses change ---

    def select(self, pre: torch.Tensor, buffers: Buffers) -> sparse.Pairs:
        """The training step's active latents, chosen from the pre-activations (no gradient; may update state)."""
        return sparse.topk_pairs(pre, self.k)

    def encode(self, x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        pre = pre_activations(x_n, W_enc, b_enc)
        vals, idx = torch.topk(pre, self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, vals.clamp_min(0))

    def reconstruction(self, batch: Batch, z: Latents) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole dictionary's ``x_hat``, and the reconstruction term trained instead of its plain
        reconstruction loss (None: that loss itself)."""
        return decode(z, batch.W_dec, batch.b_dec), None

    # --- the step ---

    def latents(self, batch: Batch) -> tuple[Latents, Latents | None, torch.Tensor | None]:
        """The main latents, AuxK's dead-latent latents and the dead set ``(M, F)`` (both None without AuxK)."""
        dead: list[torch.Tensor] = []

        def choose(pre: torch.Tensor) -> sparse.Pairs | tuple[sparse.Pairs, sparse.Pairs]:
            main = self.select(pre, batch.buffers)
            if not self.aux:
                return main
            dead.append(self._update_dead(main, batch.buffers["tokens_since_fired_F"], pre.shape[-2]))
            return main, dead_selection(pre, dead[0], self.aux_k)

        if batch.pairs:
            out = sparse.encode_pairs(batch.x_n, batch.W_enc, batch.b_enc, choose)
        else:
            pre = pre_activations(batch.x_n, batch.W_enc, batch.b_enc)
            with torch.no_grad():
                chosen = choose(pre.detach())
            out = tuple(select_dense(pre, p) for p in chosen) if self.aux else select_dense(pre, chosen)
        if not self.aux:
            return out, None, None
        return out[0], out[1], dead[0]

    def _update_dead(self, main: sparse.Pairs, since_MF: torch.Tensor, rows: int) -> torch.Tensor:
        """Count this step's rows for every latent that did not fire, restart those that did; the dead set."""
        with torch.no_grad():
            fired = across_ranks(fires(main, self.n_latents), "max") > 0
            if dist.is_available() and dist.is_initialized():
                rows *= dist.get_world_size()  # every rank trains on an equal share of the global batch
            since_MF.copy_(torch.where(fired, torch.zeros_like(since_MF), since_MF + rows))
            return since_MF >= self.dead_tokens

    def loss(self, batch: Batch) -> Output:
        z, aux_z, dead = self.latents(batch)
        x_hat, trained = self.reconstruction(batch, z)
        sq = fn.squared_error(batch.x_n, x_hat)
        recon = batch.recon(sq)
        terms = {"recon": recon, "penalty": torch.zeros_like(recon)}
        if trained is not None:
            terms["prefix_recon"] = trained
        loss = recon if trained is None else trained
        if aux_z is not None:
            auxk = self._auxk(batch, x_hat, aux_z, dead)
            terms.update(aux=auxk, dead=dead.sum(-1).to(recon.dtype))
            loss = loss + self.aux_alpha * auxk
        return Output(loss, z, sq, terms)

    def _auxk(self, batch: Batch, x_hat: torch.Tensor, aux_z: Latents, dead_MF: torch.Tensor) -> torch.Tensor:
        e = (batch.x_n - x_hat).detach()
        e_hat = decode(aux_z, batch.W_dec, torch.zeros((), dtype=e.dtype, device=e.device))
        err = fn.squared_error(e, e_hat).mean(dim=-1)
        spread = fn.squared_error(e, e.mean(dim=-2, keepdim=True)).mean(dim=-1)
        # A constant residual (spread 0) has nothing to explain: 0, and no 0 * inf in the gradient.
        ok = dead_MF.any(dim=-1) & (spread > 0)
        auxk = err / torch.where(ok, spread, torch.ones_like(spread))
        return torch.where(ok, auxk, torch.zeros_like(auxk))


class TopK(TopKFamily):
    name = "topk"
