"""What every architecture provides, and the pieces several of them share.

An architecture is the part of an SAE that differs between kinds of SAE: how latents come from the normalised
input, for training and for inference (:meth:`Architecture.encode`), what the SAE is trained to minimise
(:meth:`Architecture.loss`: reconstruction, sparsity, auxiliary terms, all of it), and which per-SAE tensors it
keeps beside the weights (:meth:`Architecture.buffers`: penalty weights, an inference threshold, dead-latent
counters), saved in sae.safetensors and in checkpoints. Shared and defined elsewhere: input normalisation and the
unit-norm linear decoder's parameters (:mod:`fit.sae`), the per-member reconstruction loss kind and the stacking
of many SAEs (:mod:`fit.stack`), the constrained optimiser (:mod:`fit.optim`).

An architecture object is built for one configuration's fields (its fields class, e.g.
:class:`fit.architectures.relu_l1.HierFields`) and width (``cls(fields, n_latents)``); SAEs whose objects have
equal :attr:`Architecture.key` train as one stack. Training always sees the members first (``x_n (1 or M, B, D)``,
``W_enc (M, D, F)``, ``b_enc (M, 1, F)``, ``W_dec (M, F, D)``, ``b_dec (M, 1, D)``, buffers ``(M, ...)``);
``encode`` broadcasts over leading dimensions so one definition serves a single SAE and a stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist

from fit import functional as fn
from fit import sparse
from fit.errors import FitError

Buffers = dict[str, torch.Tensor]
Latents = torch.Tensor | sparse.Pairs
"""A batch's latents: dense ``z (…, B, F)`` or active (value, index) pairs (:mod:`fit.sparse`)."""


@dataclass
class Batch:
    """What one training step of a stack of M SAEs of one architecture sees (members first)."""

    x_n: torch.Tensor
    """The normalised rows, ``(1, B, D)`` when every member shares one normalisation, else ``(M, B, D)``."""
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    buffers: Buffers
    """The members' buffers (stacked); an architecture's training state among them is updated in place."""
    recon: Callable[[torch.Tensor], torch.Tensor]
    """Each member's reconstruction loss ``(M,)`` from its rows' squared errors ``(M, B)`` (mse or l2 per member)."""
    l1_scale: float
    """The sparsity penalty's warm-up factor at this step."""
    pairs: bool
    """Whether to compute through the active (row, latent) pairs (:mod:`fit.sparse`) or densely: the same function,
    rounded differently."""


@dataclass
class Output:
    """One step's result for every member."""

    loss: torch.Tensor
    """The training loss ``(M,)``: the members share no parameter, so ``loss.sum()`` gives each its gradient."""
    z: Latents
    """The latents (for metrics only)."""
    sq: torch.Tensor
    """Squared error of the whole dictionary's reconstruction per row ``(M, B)`` (explained variance)."""
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Parts of the loss logged as metrics, each ``(M,)``: ``recon`` (the whole dictionary's reconstruction loss)
    and ``penalty`` (the sparsity penalty before its warm-up scale) always, plus the architecture's own."""


class Architecture(Protocol):
    name: str
    """The architecture's registered name (``relu-l1``, ``topk``, ...): what config.json and exports record."""
    key: tuple
    """SAEs of one width whose architectures have equal keys train as one stack."""
    group_bounds: list[tuple[int, int]]
    """[start, stop) of each latent group its metrics report per group (penalty groups, Matryoshka prefixes)."""
    sparse_latents: bool
    """Sparse by construction (TopK family: at most k per row): steps through pairs unless ``--sparse off``;
    otherwise (ReLU-L1) only once its measured L0 is low enough, under ``--sparse auto``."""

    saelens: str
    """The SAELens architecture that computes this one at inference (``standard``, ``topk``, ``jumprelu``), under
    which :mod:`fit.export` writes it."""

    def __init__(self, cfg: Any, n_latents: int) -> None: ...

    def buffers(self) -> Buffers:
        """The SAE's own tensors beside its parameters, at initialisation (latents last), saved with its weights."""

    def encode(self, x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        """Inference latents ``z (…, B, F)`` of the normalised rows (what evaluate, browse and absorption see)."""

    def loss(self, batch: Batch) -> Output:
        """The training step's loss of every member of a stack, and its parts."""


# --- pieces several architectures share ---------------------------------------------------------------------------


def pre_activations(x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor) -> torch.Tensor:
    """``x_n W_enc + b_enc`` (every latent, before the activation)."""
    return x_n @ W_enc + b_enc


def decode(z: Latents, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """``x_hat`` from dense latents or from pairs."""
    if isinstance(z, sparse.Pairs):
        return sparse.decode_pairs(z, W_dec, b_dec)
    return fn.decode(z, W_dec, b_dec)


def across_ranks(t: torch.Tensor, op: str) -> torch.Tensor:
    """``t`` reduced over the data-parallel processes (``"max"``, ``"min"`` or ``"sum"``), in place; unchanged in a
    single process. Training state (BatchTopK's threshold, AuxK's counters) is updated from the whole global batch,
    so every rank holds the same state and the checkpoint rank 0 writes is every rank's."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op={"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}[op])
    return t


def fires(z: Latents, n_latents: int) -> torch.Tensor:
    """Rows each latent is active (non-zero) in, per member: ``(M, F)`` int64 (the L0 and live latents)."""
    if isinstance(z, sparse.Pairs):
        vals, idx = z.vals.detach(), z.idx
        lead = vals.shape[:-2]
        counts = torch.zeros(*lead, n_latents, dtype=torch.int64, device=vals.device)
        return counts.scatter_add_(-1, idx.flatten(-2), (vals != 0).flatten(-2).long())
    return torch.count_nonzero(z.detach(), dim=-2)


def select_dense(pre: torch.Tensor, chosen: sparse.Pairs) -> torch.Tensor:
    """The dense latents of a selection made on ``pre``: ``pre`` where a chosen slot is non-zero, else 0. Its
    gradient is 1 on the chosen positive latents and 0 elsewhere, as :func:`fit.sparse.encode_pairs`'s."""
    hits = torch.zeros(pre.shape, dtype=torch.int64, device=pre.device)
    hits.scatter_add_(-1, chosen.idx, (chosen.vals != 0).long())  # padding slots (index 0, value 0) add nothing
    return torch.where(hits > 0, pre, torch.zeros((), dtype=pre.dtype, device=pre.device))


def prefix_losses(batch: Batch, z: Latents, ends: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Matryoshka's nested reconstructions: each prefix ``[0, end)`` of the dictionary reconstructs the rows on its
    own (plus ``b_dec``). Returns the mean over prefixes of the members' reconstruction losses ``(M,)`` and the
    last prefix's (the whole dictionary's) reconstruction ``x_hat (M, B, D)``."""
    losses, x_hat = [], batch.b_dec
    if isinstance(z, sparse.Pairs):
        for end in ends:
            x_hat = sparse.decode_pairs(sparse.prefix(z, end), batch.W_dec, batch.b_dec)
            losses.append(batch.recon(fn.squared_error(batch.x_n, x_hat)))
    else:
        # One matmul per segment between consecutive ends (together one decoder matmul), summed cumulatively.
        start = 0
        for end in ends:
            x_hat = x_hat + z[..., start:end] @ batch.W_dec[..., start:end, :]
            losses.append(batch.recon(fn.squared_error(batch.x_n, x_hat)))
            start = end
    return torch.stack(losses).mean(dim=0), x_hat


def check_prefixes(fields: Any) -> None:
    """Matryoshka prefix ends must be increasing positive latent counts (a list from config.json becomes a tuple)."""
    object.__setattr__(fields, "prefixes", tuple(int(p) for p in fields.prefixes))
    if any(p < 1 for p in fields.prefixes) or list(fields.prefixes) != sorted(set(fields.prefixes)):
        raise FitError(f"--prefixes must be increasing positive latent counts, got {list(fields.prefixes)}")


def prefix_ends(cfg: Any, n_latents: int) -> list[int]:
    """Where Matryoshka's prefixes end: ``cfg.prefixes``, else the ends of the K groups of ``cfg.groups``; the whole
    dictionary (``n_latents``) is always the last."""
    ends = list(cfg.prefixes) or [b for _, b in fn.group_bounds(n_latents, cfg.groups)]
    return ends if ends[-1] == n_latents else [*ends, n_latents]


def segments(ends: list[int]) -> list[tuple[int, int]]:
    """[start, stop) between consecutive prefix ends."""
    return list(zip([0, *ends[:-1]], ends, strict=True))
