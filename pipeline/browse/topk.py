"""Per-feature top-k over a stream of latent blocks, each example with its window of activations.

A block is ``z_RF`` (R rows of F latents) starting at global row ``row0``; blocks start at context boundaries
and hold whole contexts (the last one may be cut short where the rows end), so a window never needs rows of
another block. Memory is k x F x (window + 2) numbers whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MISSING = -1.0
"""Window entries outside the example's context (activations are ReLU outputs, so never negative)."""


@dataclass(frozen=True)
class Window:
    """Tokens shown around an activating position, within its context."""

    before: int = 24
    after: int = 8

    @property
    def width(self) -> int:
        return self.before + 1 + self.after


def window_acts(z_RF: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor, row0: int,
                rows_per_context: int, window: Window) -> torch.Tensor:
    """(..., W): feature ``feats``'s activations around local row ``rows`` (both of one shape ``...``), MISSING
    outside the row's context."""
    R = len(z_RF)
    offsets_W = torch.arange(-window.before, window.after + 1, device=z_RF.device)
    at_W = rows[..., None] + offsets_W  # (..., W), like every tensor named _W here
    in_context = (row0 + rows) % rows_per_context  # position of the row inside its context
    pos_W = in_context[..., None] + offsets_W
    valid_W = (pos_W >= 0) & (pos_W < rows_per_context) & (at_W >= 0) & (at_W < R)
    acts_W = z_RF[at_W.clamp(0, R - 1), feats[..., None].expand_as(at_W)]
    return torch.where(valid_W, acts_W, torch.full_like(acts_W, MISSING))


class TopK:
    """The k largest positive activations of every feature, their global rows and their windows.

    Sorted by value (descending), ties by row (ascending). Where more than k rows tie at the k-th value, which
    of them are kept is unspecified; the values kept are always exactly the k largest.
    """

    def __init__(self, n_features: int, k: int, window: Window, device: torch.device | str = "cpu") -> None:
        self.k, self.window = k, window
        self.values_kF = torch.full((k, n_features), float("-inf"), device=device)
        self.rows_kF = torch.full((k, n_features), -1, dtype=torch.long, device=device)
        self.windows_kFW = torch.full((k, n_features, window.width), MISSING, device=device)

    def add(self, z_RF: torch.Tensor, row0: int, rows_per_context: int) -> None:
        kk = min(self.k, len(z_RF))
        if kk == 0:
            return
        vals, local = torch.topk(z_RF, kk, dim=0)
        vals = torch.where(vals > 0, vals, torch.full_like(vals, float("-inf")))  # a zero is not an example
        feats = torch.arange(z_RF.shape[1], device=z_RF.device).expand_as(local)
        wins = window_acts(z_RF, local, feats, row0, rows_per_context, self.window)
        rows = torch.where(vals > float("-inf"), local + row0, torch.full_like(local, -1))
        all_vals = torch.cat([self.values_kF, vals])
        all_rows = torch.cat([self.rows_kF, rows])
        all_wins = torch.cat([self.windows_kFW, wins])
        # Two stable sorts give (value desc, row asc) order, so equal values always come out the same way.
        by_row = torch.sort(torch.where(all_rows < 0, all_rows.max() + 1, all_rows), dim=0, stable=True).indices
        by_val = torch.sort(all_vals.gather(0, by_row), dim=0, descending=True, stable=True).indices
        keep = by_row.gather(0, by_val)[: self.k]
        self.values_kF = all_vals.gather(0, keep)
        self.rows_kF = all_rows.gather(0, keep)
        self.windows_kFW = all_wins.gather(0, keep[..., None].expand(-1, -1, self.window.width))

    def feature(self, f: int) -> list[tuple[int, float, list[float]]]:
        """(row, value, window) of feature f's examples, best first; fewer than k if it fired less often."""
        vals, rows, wins = self.values_kF[:, f].cpu(), self.rows_kF[:, f].cpu(), self.windows_kFW[:, f].cpu()
        return [(int(r), float(v), w.tolist()) for v, r, w in zip(vals, rows, wins, strict=True) if r >= 0]
