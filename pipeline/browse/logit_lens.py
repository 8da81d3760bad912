"""Tokens a feature's decoder direction promotes and suppresses: the top and bottom of W_U @ d_j.

This is the logit-lens view: the direction is read straight through the unembedding, ignoring the model's
final norm and the layers after the SAE's, so it says what the direction means to the output vocabulary, not
what the model will do with it. The (V x D) @ (D x F) product is done in vocabulary chunks (Gemma's V is
262,144), keeping only the running top and bottom per feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class LensResult:
    """Per feature, the ``top`` most promoted and most suppressed token ids and their logits (F, top)."""

    promoted_ids: torch.Tensor
    promoted: torch.Tensor
    suppressed_ids: torch.Tensor
    suppressed: torch.Tensor


@torch.inference_mode()
def logit_lens(W_U_VD: torch.Tensor, dirs_FD: torch.Tensor, top: int = 10, vocab_chunk: int = 16384,
               on_progress: Callable[[int, int], None] | None = None) -> LensResult:
    V = len(W_U_VD)
    F = len(dirs_FD)
    dev = dirs_FD.device
    best = (torch.full((0, F), float("-inf"), device=dev), torch.zeros((0, F), dtype=torch.long, device=dev))
    worst = (torch.full((0, F), float("-inf"), device=dev), torch.zeros((0, F), dtype=torch.long, device=dev))

    def merge(run, vals, ids):
        vals, ids = torch.cat([run[0], vals]), torch.cat([run[1], ids])
        keep = torch.topk(vals, min(top, len(vals)), dim=0).indices
        return vals.gather(0, keep), ids.gather(0, keep)

    for lo in range(0, V, vocab_chunk):
        hi = min(lo + vocab_chunk, V)
        logits_CF = W_U_VD[lo:hi].to(dev, torch.float32) @ dirs_FD.T
        kk = min(top, hi - lo)
        v, i = torch.topk(logits_CF, kk, dim=0)
        best = merge(best, v, i + lo)
        v, i = torch.topk(-logits_CF, kk, dim=0)
        worst = merge(worst, v, i + lo)
        if on_progress is not None:
            on_progress(hi, V)
    return LensResult(best[1].T.cpu(), best[0].T.cpu(), worst[1].T.cpu(), -worst[0].T.cpu())
