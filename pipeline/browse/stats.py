"""Everything the browser shows about one SAE's features, accumulated block by block in one pass.

Per feature: firing count and activation sum (density, mean activation when active), a histogram of its
positive activations on fixed log-spaced bins, the top-k examples (:mod:`pipeline.browse.topk`) and one
uniformly random example per histogram bin, from which the site picks examples at lower quantiles once the
histogram is complete. Per group: the statistics of docs/metrics.md. Memory is bounded by features x (k +
bins) x window, independent of the number of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.browse.topk import MISSING, TopK, Window, window_acts
from pipeline.evaluate.metrics import group_stats
from pipeline.evaluate.record import GroupStats

NO_KEY = torch.iinfo(torch.int64).max
ROW_BITS = 31
"""A random example is chosen by the smallest (random key << ROW_BITS | row): rows must stay below 2**31."""


@dataclass(frozen=True)
class LogBins:
    """Fixed log-spaced activation bins; values below ``lo`` fall in the first bin, above ``hi`` in the last."""

    lo: float = 1e-4
    hi: float = 1e5
    per_decade: int = 8

    @property
    def n(self) -> int:
        return round(math.log10(self.hi / self.lo) * self.per_decade)

    def edges(self) -> np.ndarray:
        return self.lo * 10.0 ** (np.arange(self.n + 1) / self.per_decade)

    def index(self, z: torch.Tensor) -> torch.Tensor:
        b = torch.floor((torch.log10(z.clamp_min(self.lo)) - math.log10(self.lo)) * self.per_decade)
        return b.long().clamp_(0, self.n - 1)


class BinSamples:
    """One uniformly random positive example per (histogram bin, feature), with its window.

    Each (row, feature) gets an independent random key; a bin keeps its smallest key, which is a uniform draw
    among the rows that fell into it, merged across blocks with a min.
    """

    def __init__(self, n_features: int, bins: LogBins, window: Window, device: torch.device | str = "cpu") -> None:
        self.bins, self.window = bins, window
        self.keys_HF = torch.full((bins.n, n_features), NO_KEY, dtype=torch.long, device=device)
        self.values_HF = torch.zeros((bins.n, n_features), device=device)
        self.windows_HFW = torch.full((bins.n, n_features, window.width), MISSING, device=device)

    def add(self, z_RF: torch.Tensor, bin_RF: torch.Tensor, row0: int, rows_per_context: int,
            generator: torch.Generator) -> None:
        R, F = z_RF.shape
        if row0 + R >= 2**ROW_BITS:
            raise ValueError(f"row {row0 + R} is beyond the 2**{ROW_BITS} rows random examples can address")
        keys = torch.randint(0, 2**31, (R, F), generator=generator, device=z_RF.device, dtype=torch.long)
        rows_R = torch.arange(row0, row0 + R, device=z_RF.device)
        keyed = torch.where(z_RF > 0, (keys << ROW_BITS) | rows_R[:, None], NO_KEY)
        slot = bin_RF * F + torch.arange(F, device=z_RF.device)
        best = torch.full((self.bins.n * F,), NO_KEY, dtype=torch.long, device=z_RF.device)
        best = best.scatter_reduce(0, slot.reshape(-1), keyed.reshape(-1), "amin").view(self.bins.n, F)
        better = best < self.keys_HF
        if not bool(better.any()):
            return
        b, f = better.nonzero(as_tuple=True)
        local = (best[b, f] & (2**ROW_BITS - 1)) - row0
        self.keys_HF[b, f] = best[b, f]
        self.values_HF[b, f] = z_RF[local, f]
        self.windows_HFW[b, f] = window_acts(z_RF, local, f, row0, rows_per_context, self.window)

    def example(self, b: int, f: int) -> tuple[int, float, list[float]] | None:
        key = int(self.keys_HF[b, f])
        if key == NO_KEY:
            return None
        return key & (2**ROW_BITS - 1), float(self.values_HF[b, f]), self.windows_HFW[b, f].cpu().tolist()


@dataclass(frozen=True)
class StatsConfig:
    k: int = 20
    window: Window = field(default_factory=Window)
    bins: LogBins = field(default_factory=LogBins)


class FeatureStats:
    """One SAE's per-feature and per-group statistics over the rows added so far."""

    def __init__(self, n_features: int, group_bounds: list[tuple[int, int]], cfg: StatsConfig,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.group_bounds, self.cfg = n_features, list(group_bounds), cfg
        self.rows = 0
        self.count_F = torch.zeros(n_features, dtype=torch.long, device=device)
        self.sum_F = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.hist_FH = torch.zeros(n_features * cfg.bins.n, dtype=torch.long, device=device)
        self.group_hits_K = torch.zeros(len(self.group_bounds), dtype=torch.long, device=device)
        self.topk = TopK(n_features, cfg.k, cfg.window, device)
        self.samples = BinSamples(n_features, cfg.bins, cfg.window, device)

    def add(self, z_RF: torch.Tensor, row0: int, rows_per_context: int, generator: torch.Generator) -> None:
        """A block of whole contexts (see :mod:`pipeline.browse.topk`), starting at global row ``row0``."""
        fired = z_RF > 0
        self.rows += len(z_RF)
        self.count_F += fired.sum(dim=0)
        self.sum_F += z_RF.sum(dim=0, dtype=torch.float64)
        for g, (a, b) in enumerate(self.group_bounds):
            self.group_hits_K[g] += fired[:, a:b].any(dim=1).sum()
        bin_RF = self.cfg.bins.index(z_RF)
        slot = torch.arange(self.n, device=z_RF.device) * self.cfg.bins.n + bin_RF
        self.hist_FH += torch.bincount(slot[fired], minlength=self.n * self.cfg.bins.n)
        self.topk.add(z_RF, row0, rows_per_context)
        self.samples.add(z_RF, bin_RF, row0, rows_per_context, generator)

    def cpu(self) -> FeatureStats:
        """Move everything to the CPU once the pass is done, so reading results feature by feature is cheap."""
        for holder, names in ((self, ("count_F", "sum_F", "hist_FH", "group_hits_K")),
                              (self.topk, ("values_kF", "rows_kF", "windows_kFW")),
                              (self.samples, ("keys_HF", "values_HF", "windows_HFW"))):
            for name in names:
                setattr(holder, name, getattr(holder, name).cpu())
        return self

    # -- results ----------------------------------------------------------------------------------------------
    @property
    def histograms(self) -> np.ndarray:
        """(F, bins) counts of positive activations."""
        return self.hist_FH.view(self.n, self.cfg.bins.n).cpu().numpy()

    @property
    def density(self) -> np.ndarray:
        return self.count_F.cpu().numpy() / max(self.rows, 1)

    @property
    def mean_when_active(self) -> np.ndarray:
        count = self.count_F.cpu().numpy()
        return np.where(count > 0, self.sum_F.cpu().numpy() / np.maximum(count, 1), 0.0)

    @property
    def max(self) -> np.ndarray:
        top = self.topk.values_kF[0].cpu().numpy()
        return np.where(np.isfinite(top), top, 0.0)

    def groups(self) -> list[GroupStats]:
        """Per group, as docs/metrics.md defines them (the same numbers `pipeline evaluate` writes)."""
        return group_stats(self.group_bounds, self.count_F.cpu().numpy(), self.sum_F.cpu().numpy(),
                           self.group_hits_K.cpu().numpy(), self.rows)

    def quantile_examples(self, f: int, quantiles: tuple[float, ...]) -> list[tuple[float, int, float, list[float]]]:
        """(quantile, row, value, window): a random example from the bin holding each quantile of feature f's
        positive activations, one per distinct bin."""
        counts = self.hist_FH.view(self.n, self.cfg.bins.n)[f].cpu().numpy()
        total = counts.sum()
        if total == 0:
            return []
        cdf = np.cumsum(counts) / total
        out, seen = [], set()
        for q in quantiles:
            b = int(np.searchsorted(cdf, q, side="left"))
            if b in seen:
                continue
            seen.add(b)
            ex = self.samples.example(b, f)
            if ex is not None:
                out.append((q, *ex))
        return out
