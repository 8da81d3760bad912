"""SAEBench's probes (``probing.train_multi_probe``): one-vs-rest logistic regression, trained in torch.

26 binary logistic regressions at once (one linear layer, 26 outputs), each class's BCE weighted by its
negatives over its positives, Adam with the learning rate decaying exponentially from ``lr`` to ``end_lr``
over the epochs. The first-letter probe reads the LM's residual; the k-sparse selection probe reads SAE latents
with an extra L1 penalty (:mod:`.ksparse`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

N_CLASSES = 26


@dataclass(frozen=True)
class ProbeSettings:
    """SAEBench's first-letter probe settings (``common.train_and_save_probes``)."""

    epochs: int = 50
    lr: float = 1e-2
    end_lr: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 64


@dataclass
class LinearProbe:
    """Logits = x @ weight.T + bias: one row of ``weight`` per letter."""

    weight: torch.Tensor  # (26, D)
    bias: torch.Tensor  # (26,)

    def logits(self, x_BD: torch.Tensor) -> torch.Tensor:
        return x_BD @ self.weight.T + self.bias


def one_hot(labels_B: torch.Tensor, n: int = N_CLASSES) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels_B, n).float()


def train_multi_probe(x_BD: torch.Tensor, y_BC: torch.Tensor, *, epochs: int, lr: float, end_lr: float,
                      weight_decay: float, batch_size: int, seed: int,
                      map_x: Callable[[torch.Tensor], torch.Tensor] | None = None, dim: int | None = None,
                      l1: float = 0.0, zero_init: bool = False) -> LinearProbe:
    """One-vs-rest logistic regression of the multi-hot ``y_BC`` on ``x_BD`` (or on ``map_x`` of each batch of
    it, of width ``dim``), as SAEBench trains it; ``seed`` fixes the initialisation and the batch order.
    ``zero_init`` starts from zero weights instead of nn.Linear's random ones (see :mod:`.ksparse`)."""
    gen = torch.Generator().manual_seed(seed)
    dev = x_BD.device
    n_out, dim = y_BC.shape[1], dim or x_BD.shape[1]
    layer = nn.Linear(dim, n_out)
    with torch.no_grad():  # nn.Linear's own initialisation, drawn from our generator rather than the global one
        bound = 0.0 if zero_init else 1 / math.sqrt(dim)
        layer.weight.copy_(torch.empty(n_out, dim).uniform_(-bound, bound, generator=gen))
        layer.bias.copy_(torch.empty(n_out).uniform_(-bound, bound, generator=gen))
    layer = layer.to(dev)
    positives = y_BC.sum(dim=0)
    # SAEBench's pos_weight: negatives / positives per class (a class without positives gets inf; keep it finite)
    pos_weight = ((len(y_BC) - positives) / positives.clamp_min(1)).to(dev)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / epochs))
    y_BC = y_BC.to(dev)
    for _ in range(epochs):
        order = torch.randperm(len(x_BD), generator=gen).to(dev)
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            xb = x_BD[idx] if map_x is None else map_x(x_BD[idx])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(layer(xb), y_BC[idx])
            if l1:
                loss = loss + l1 * layer.weight.abs().sum(dim=-1).mean()
            loss.backward()
            opt.step()
        sched.step()
    return LinearProbe(layer.weight.detach().clone(), layer.bias.detach().clone())


def f1_score(pred_B: torch.Tensor, true_B: torch.Tensor) -> float:
    """Binary F1 = 2 TP / (2 TP + FP + FN); 0 when there is nothing to find nor found (as sklearn's)."""
    tp = int((pred_B & true_B).sum())
    denom = 2 * tp + int((pred_B & ~true_B).sum()) + int((~pred_B & true_B).sum())
    return 2 * tp / denom if denom else 0.0


def letter_f1s(logits_BC: torch.Tensor, labels_B: torch.Tensor) -> list[float]:
    """Each letter's F1 of its own probe (logit > 0 predicts the letter), as SAEBench's ``f1_probe``."""
    return [f1_score(logits_BC[:, c] > 0, labels_B == c) for c in range(logits_BC.shape[1])]
