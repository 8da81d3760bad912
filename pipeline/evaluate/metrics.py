"""Metric definitions as plain functions and float64 accumulators (docs/metrics.md states each in words).

Shapes: B rows, D = d_model, F latents, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.evaluate.record import GroupStats, Reconstruction
from store.stats import Moments, merge, moments_of

ACTIVE_THRESHOLD = 1e-4
"""The paper's definition: a feature is active when its mean activation over the evaluation rows exceeds this."""


def kl_per_token(clean_logp_BV: torch.Tensor, spliced_logp_BV: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_spliced) per row (nats), from log-probabilities (``torch.log_softmax`` of the logits)."""
    return (clean_logp_BV.exp() * (clean_logp_BV - spliced_logp_BV)).sum(dim=-1)


def cross_entropy_per_token(logp_BV: torch.Tensor, targets_B: torch.Tensor) -> torch.Tensor:
    """-log p(target) per row (nats), from log-probabilities."""
    return -logp_BV.gather(-1, targets_B[:, None]).squeeze(-1)


def ce_recovered(ce_clean: float, ce_spliced: float, ce_zero: float) -> float:
    """(CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 = as good as the clean model, 0 = as bad as zeroing."""
    denom = ce_zero - ce_clean
    return (ce_zero - ce_spliced) / denom if denom != 0 else float("nan")


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t confidence interval, n). Half-width is NaN for n < 2."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n


@dataclass
class ReconstructionAccumulator:
    """Reconstruction and feature statistics over a stream of (x, x_hat, z) batches, in float64."""

    n_latents: int
    group_bounds: list[tuple[int, int]]
    rows: int = 0
    sse_raw: float = 0.0
    """sum_i ||x_i - x_hat_i||^2 in activation space."""
    sse_norm: float = 0.0
    """sum_i ||x_n,i - x_hat_n,i||^2 in the SAE's normalised space (the training loss's reconstruction term)."""
    penalty: float = 0.0
    l0_sum: float = 0.0
    moments: Moments | None = None
    moments_norm: Moments | None = None
    fire_count: np.ndarray = field(default=None)  # type: ignore[assignment]
    act_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    group_token_hits: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.fire_count = np.zeros(self.n_latents, dtype=np.int64)
        self.act_sum = np.zeros(self.n_latents, dtype=np.float64)
        self.group_token_hits = np.zeros(len(self.group_bounds), dtype=np.int64)

    def add(self, x_BD: torch.Tensor, x_hat_BD: torch.Tensor, x_n_BD: torch.Tensor, x_hat_n_BD: torch.Tensor,
            z_BF: torch.Tensor, w_F: torch.Tensor) -> None:
        x64 = x_BD.double()
        self.rows += len(x_BD)
        self.sse_raw += float((x64 - x_hat_BD.double()).pow(2).sum())
        self.sse_norm += float((x_n_BD.double() - x_hat_n_BD.double()).pow(2).sum())
        self.penalty += float((z_BF.double() * w_F.double()).sum())
        batch = moments_of(x64.cpu().numpy())
        self.moments = batch if self.moments is None else merge(self.moments, batch)
        batch = moments_of(x_n_BD.double().cpu().numpy())
        self.moments_norm = batch if self.moments_norm is None else merge(self.moments_norm, batch)
        active = z_BF > 0
        self.l0_sum += float(active.sum())
        self.fire_count += active.sum(dim=0).cpu().numpy()
        self.act_sum += z_BF.double().sum(dim=0).cpu().numpy()
        for g, (a, b) in enumerate(self.group_bounds):
            self.group_token_hits[g] += int(active[:, a:b].any(dim=1).sum())

    def result(self) -> Reconstruction:
        n = max(self.rows, 1)
        # sum_i ||x_i - mean||^2 over the evaluation rows, merged exactly batch by batch
        sst = self.moments.total_variance if self.moments is not None else float("nan")
        sst_norm = self.moments_norm.total_variance if self.moments_norm is not None else float("nan")
        mean_act = self.act_sum / n
        return Reconstruction(
            rows=self.rows,
            mse=self.sse_norm / n,
            mse_raw=self.sse_raw / n,
            explained_variance=1 - self.sse_raw / sst if sst > 0 else float("nan"),
            explained_variance_normalised=1 - self.sse_norm / sst_norm if sst_norm > 0 else float("nan"),
            l0=self.l0_sum / n,
            penalty=self.penalty / n,
            active_features=int((mean_act > ACTIVE_THRESHOLD).sum()),
            dead_features=int((self.fire_count == 0).sum()),
            groups=group_stats(self.group_bounds, self.fire_count, self.act_sum, self.group_token_hits, self.rows),
            feature_density=(self.fire_count / n).tolist(),
            feature_mean_activation=mean_act.tolist(),
        )


def group_stats(group_bounds: list[tuple[int, int]], fire_count_F: np.ndarray, act_sum_F: np.ndarray,
                token_hits_K: np.ndarray, rows: int) -> list[GroupStats]:
    """Each latent group's statistics from per-latent firing counts and activation sums over ``rows`` rows and
    per-group counts of rows on which any of the group's latents fired."""
    n = max(rows, 1)
    out = []
    for g, (a, b) in enumerate(group_bounds):
        fired = fire_count_F[a:b]
        out.append(GroupStats(
            group=g + 1,
            features=b - a,
            live=int((fired > 0).sum()),
            active=int((act_sum_F[a:b] / n > ACTIVE_THRESHOLD).sum()),
            token_rate=float(token_hits_K[g] / n),
            feature_density=float(fired.mean() / n),
            intensity=float(act_sum_F[a:b].sum() / fired.sum()) if fired.sum() else 0.0,
        ))
    return out
