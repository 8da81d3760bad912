"""Ground-truth metrics of an SAE on a synthetic store, as plain functions (docs/metrics.md states each in words and
formulas).

Shapes: B rows, D = d_model, F SAE latents, G true features, P parents (true features with children), C children.
The MCC, uniqueness and per-latent classification follow ``sae_lens.synthetic.evals`` (tests hold ours equal to
SAELens's on the same SAE and rows); absorption on the true hierarchy and the groups' specificity are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.evaluate.absorption.score import AbsorptionSettings

COSINE_BAR = 0.5
"""A latent represents a true feature when the absolute cosine of its decoder direction with the feature's is at
least this (a parent's latent, a group's matched features)."""
ABSORPTION_SHARE = AbsorptionSettings.proportion
"""A silent parent latent counts as absorbed when latents pointing towards the parent still put at least this share
of the parent's true coefficient along its direction (SAEBench's 0.4, with the truth in place of a probe)."""
ABSORBER_COS = AbsorptionSettings.fraction_cos
"""A latent points towards a parent when its decoder direction's cosine with the parent's exceeds this (SAEBench's
ABSORPTION_FRACTION_PROBE_COS_THRESHOLD); latents pointing away, whose interference would only lower the sum, and
unrelated ones are left out."""
MIN_ROWS = 10
"""A (parent, child) pair is scored when it has at least this many rows with the child on and this many control
rows (the parent on, none of its children)."""


def true_directions(dictionary_GD: torch.Tensor, norm: str) -> torch.Tensor:
    """The true features' directions as an SAE with input normalisation ``norm`` can learn them: the dictionary
    itself, except under layer norm, which removes each row's mean, so no SAE direction has a component along the
    all-ones vector: there each feature's direction is compared centred (``d - mean(d) 1``)."""
    if norm == "layer_norm":
        return dictionary_GD - dictionary_GD.mean(dim=1, keepdim=True)
    return dictionary_GD


def abs_cosines(a_AD: torch.Tensor, b_BD: torch.Tensor) -> torch.Tensor:
    """|cos| between every row of ``a`` and every row of ``b`` (rows of norm below 1e-8 count as norm 1e-8, as
    SAELens's ``cosine_similarities`` does)."""
    a = a_AD / a_AD.norm(dim=1, keepdim=True).clamp(min=1e-8)
    b = b_BD / b_BD.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return (a @ b.T).abs()


@dataclass(frozen=True)
class Matching:
    """The one-to-one matching of latents and true features that maximises the summed |cos| (Hungarian)."""

    latent: np.ndarray
    """Matched latents (min(F, G) of them)."""
    feature: np.ndarray
    """The true feature each is matched to."""
    cosine: np.ndarray
    """Their |cos|."""

    @property
    def mcc(self) -> float:
        """Mean correlation coefficient: the mean |cos| of the matched pairs."""
        return float(self.cosine.mean()) if len(self.cosine) else 0.0

    def latent_of(self, n_features: int) -> np.ndarray:
        """Per true feature, its matched latent, or -1."""
        out = np.full(n_features, -1, dtype=np.int64)
        out[self.feature] = self.latent
        return out

    def cosine_of(self, n_features: int) -> np.ndarray:
        out = np.zeros(n_features)
        out[self.feature] = self.cosine
        return out


def hungarian(cos_FG: torch.Tensor) -> Matching:
    from scipy.optimize import linear_sum_assignment

    cos = cos_FG.cpu().numpy()
    rows, cols = linear_sum_assignment(1 - cos)
    return Matching(rows, cols, cos[rows, cols])


def uniqueness(best_feature_F: torch.Tensor) -> float:
    """Distinct best-matching true features (each latent's argmax of its cosines) over latents (SAELens's
    ``feature_uniqueness``)."""
    if len(best_feature_F) == 0:
        return 0.0
    return len(best_feature_F.unique()) / len(best_feature_F)


@dataclass(frozen=True)
class Classification:
    """Each latent as a detector of its best-matching true feature, averaged over latents (0 where undefined)."""

    precision: float
    recall: float
    f1: float
    accuracy: float


def classification(tp_F: np.ndarray, fp_F: np.ndarray, fn_F: np.ndarray, tn_F: np.ndarray) -> Classification:
    """From per-latent counts of (latent fires, its feature is active) over the rows."""
    tp, fp, fn, tn = (np.asarray(a, dtype=np.float64) for a in (tp_F, fp_F, fn_F, tn_F))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    accuracy = (tp + tn) / np.maximum(tp + fp + fn + tn, 1e-8)
    if not len(tp):
        return Classification(0.0, 0.0, 0.0, 0.0)
    return Classification(float(precision.mean()), float(recall.mean()), float(f1.mean()), float(accuracy.mean()))


def absorber_projections(W_FD: torch.Tensor, unit_PD: torch.Tensor) -> torch.Tensor:
    """(F, P): each latent's decoder row projected on each parent's unit direction, kept where the latent points
    towards the parent (cosine above ABSORBER_COS), else 0."""
    along_FP = W_FD @ unit_PD.T
    cos_FP = along_FP / W_FD.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return torch.where(cos_FP > ABSORBER_COS, along_FP, torch.zeros((), dtype=along_FP.dtype, device=W_FD.device))


def absorbed(z_parent_B: torch.Tensor, along_B: torch.Tensor, coef_B: torch.Tensor) -> torch.Tensor:
    """Rows where the parent's latent is silent yet the latents pointing towards the parent put at least
    ABSORPTION_SHARE of its true coefficient along its direction (``along``: their contributions projected on the
    parent's unit direction, in activation units; with the parent's latent silent it is the others' sum)."""
    return (z_parent_B == 0) & (along_B >= ABSORPTION_SHARE * coef_B)


@dataclass(frozen=True)
class PairCounts:
    """What absorption of one (parent, child) pair is computed from, summed over rows where the parent is on."""

    child_rows: int
    """Rows with the child on."""
    child_absorbed: int
    child_share: float
    """Sum over those rows of the parent latent's share of the parent's coefficient (its contribution along the
    parent's direction over the coefficient)."""
    control_rows: int
    """Rows with the parent on and none of its children."""
    control_absorbed: int
    control_share: float


@dataclass(frozen=True)
class PairScore:
    absorption: float
    """Absorbed rate with the child on minus the control rate."""
    partial: float
    """1 - (mean share with the child on) / (mean share in control rows): how much the parent's latent shrinks."""
    child_rate: float
    control_rate: float


def pair_score(c: PairCounts) -> PairScore | None:
    """The pair's absorption, or None when it has fewer than MIN_ROWS rows of either kind."""
    if c.child_rows < MIN_ROWS or c.control_rows < MIN_ROWS:
        return None
    child_rate, control_rate = c.child_absorbed / c.child_rows, c.control_absorbed / c.control_rows
    control_share = c.control_share / c.control_rows
    partial = 1 - (c.child_share / c.child_rows) / control_share if control_share > 0 else float("nan")
    return PairScore(child_rate - control_rate, partial, child_rate, control_rate)


def group_depths(best_feature_F: np.ndarray, best_cos_F: np.ndarray, depth_G: np.ndarray,
                 bounds: list[tuple[int, int]]) -> list[dict]:
    """Per latent group: its latents matched to a true feature (|cos| >= COSINE_BAR), how many of those features lie
    at each depth (-1: outside every tree), and the mean depth of the ones inside a tree."""
    max_depth = int(depth_G.max(initial=-1))
    out = []
    for a, b in bounds:
        ok = best_cos_F[a:b] >= COSINE_BAR
        depths = depth_G[best_feature_F[a:b][ok]]
        counts = np.bincount(depths + 1, minlength=max_depth + 2).tolist()
        inside = depths[depths >= 0]
        out.append({"latents": b - a, "matched": int(ok.sum()), "depth_counts": counts,
                    "mean_depth": float(inside.mean()) if len(inside) else float("nan"),
                    "features": best_feature_F[a:b][ok]})
    return out
