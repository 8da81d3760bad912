"""AdamW that keeps the decoder's rows (one per latent) at unit norm.

Before each step the gradient component parallel to each decoder row is removed, so the step moves the row
along the sphere to first order; after the step the rows are renormalised. This is the "ConstrainedAdam" of
the dictionary-learning code the paper builds on, with AdamW's decoupled weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fit.functional import remove_parallel_component, unit_rows


class ConstrainedAdamW(torch.optim.AdamW):
    def __init__(self, params: Iterable[torch.nn.Parameter], constrained: Iterable[torch.nn.Parameter],
                 **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.constrained = list(constrained)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for W in self.constrained:
            if W.grad is not None:
                W.grad.copy_(remove_parallel_component(W.grad, W))
        loss = super().step(closure)
        for W in self.constrained:
            W.copy_(unit_rows(W))
        return loss
