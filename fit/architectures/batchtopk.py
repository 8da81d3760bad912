"""BatchTopK SAE (Bussmann et al. 2024): the k x B largest ReLU'd pre-activations over the whole batch of B rows
stay active (rows get variable counts, k on average), no sparsity penalty; AuxK optional as for TopK.

Inference cannot see a batch, so it keeps every pre-activation above a threshold ``theta`` estimated during training
(the buffer ``threshold``, saved with the weights): each step's smallest positive selected activation, averaged by
an exponential moving average (``theta <- THRESHOLD_DECAY * theta + (1 - THRESHOLD_DECAY) * min``, started at the
first step's minimum; SAELens's ``topk_threshold_lr`` 0.01 is the same decay). ``SAE.encode`` (evaluate, browse,
absorption) uses the threshold, so the L0 they measure is the threshold's, not k.
"""

from __future__ import annotations

import torch

from fit import sparse
from fit.architectures.base import Buffers, across_ranks, pre_activations
from fit.architectures.topk import TopKFamily

THRESHOLD_DECAY = 0.99
"""Weight of the running threshold against each step's minimum (SAELens's default rate, 1 - 0.01)."""
UNSET = -1.0
"""The threshold before the first training step (every positive pre-activation passes it)."""


def update_threshold(theta: torch.Tensor, chosen: sparse.Pairs) -> None:
    """Fold this step's smallest positive selected activation, per member, into the running threshold (in place;
    a member whose selection holds no positive value keeps its threshold)."""
    with torch.no_grad():
        vals = chosen.vals.detach()
        low = torch.where(vals > 0, vals, torch.full((), float("inf"), dtype=vals.dtype, device=vals.device))
        low = across_ranks(low.flatten(-2).amin(dim=-1).to(theta.dtype), "min")
        seen = torch.isfinite(low)
        new = torch.where(theta < 0, low, THRESHOLD_DECAY * theta + (1 - THRESHOLD_DECAY) * low)
        theta.copy_(torch.where(seen, new, theta))


def threshold_encode(pre: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Latents above the threshold (and above 0); ``theta`` per SAE (0-dim) or per member ``(M,)``."""
    keep = (pre > theta.reshape(*theta.shape, 1, 1)) & (pre > 0)
    return torch.where(keep, pre, torch.zeros((), dtype=pre.dtype, device=pre.device))


class BatchTopKFamily(TopKFamily):
    """BatchTopK's selection during training and its threshold at inference (Matryoshka shares both)."""

    saelens = "jumprelu"
    """At inference a ReLU that keeps the pre-activations above the threshold: SAELens's JumpReLU with the threshold
    as a vector (:mod:`fit.export`)."""

    def buffers(self) -> Buffers:
        return {**super().buffers(), "threshold": torch.tensor(UNSET)}

    def select(self, pre: torch.Tensor, buffers: Buffers) -> sparse.Pairs:
        chosen = sparse.batch_topk_pairs(pre, self.k)
        update_threshold(buffers["threshold"], chosen)
        return chosen

    def encode(self, x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        return threshold_encode(pre_activations(x_n, W_enc, b_enc), buffers["threshold"])


class BatchTopK(BatchTopKFamily):
    name = "batchtopk"
