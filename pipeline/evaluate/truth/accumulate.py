"""One SAE's ground-truth evaluation over a synthetic store's held-out rows, accumulated chunk by chunk in the same
pass as the reconstruction metrics (:mod:`pipeline.evaluate.runner`), then turned into its record.

Latent j's contribution to the reconstruction in activation units is ``z_j * scale_b * w_j``, where ``w_j`` is its
decoder row in activation space (``SAE.decoder_directions``: the row itself, times the store's standard deviation
under ``store_stats``) and ``scale_b`` the row's standard deviation under layer norm (else 1): every projection on a
true direction below is of that.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fit.sae import SAE
from pipeline.evaluate.record import GroundTruthRecord, TruthDepth, TruthGroup, TruthPair
from pipeline.evaluate.truth import metrics as m
from store.truth import GroundTruth, dense_rows

SUB_ROWS = 2048
"""Rows handled at once (the dense (rows, G) coefficients of synth-16k are 128 MB at this size)."""
DIRECTIONS = {
    "none": "decoder rows against the true dictionary, both in activation space",
    "store_stats": "decoder rows times the store's standard deviation (activation space) against the true dictionary",
    "layer_norm": "decoder rows against the true directions centred (layer norm removes each row's mean, so no "
                  "latent can point along the all-ones vector)",
}


class TruthAccumulator:
    def __init__(self, sae: SAE, truth: GroundTruth, device: torch.device) -> None:
        self.sae, self.truth, self.device = sae, truth, device
        W_FD = sae.decoder_directions().to(device)
        true_GD = m.true_directions(truth.dictionary_GD.to(device), sae.cfg.norm)
        cos_FG = m.abs_cosines(W_FD, true_GD)
        self.best_cos_F, best = cos_FG.max(dim=1)
        self.best_feature_F = best
        self.matching = m.hungarian(cos_FG)
        self.uniqueness = m.uniqueness(best)
        del cos_FG
        G = truth.n_features
        self.parents = truth.parents_with_children.to(device)
        latent = torch.from_numpy(self.matching.latent_of(G)).to(device)[self.parents]
        learned = torch.from_numpy(self.matching.cosine_of(G) >= m.COSINE_BAR).to(device)[self.parents]
        self.parent_latent = torch.where(learned, latent, -1)
        unit_GD = truth.dictionary_GD.to(device)
        unit_GD = unit_GD / unit_GD.norm(dim=1, keepdim=True).clamp(min=1e-8)
        unit_PD = unit_GD[self.parents]
        self.along_FP = m.absorber_projections(W_FD, unit_PD)
        self.own_P = (W_FD[self.parent_latent.clamp(min=0)] * unit_PD).sum(dim=1)
        """The parent latent's own projection on its parent's direction, whatever its cosine."""
        self.children = truth.children[1].to(device)
        self.pair_parent = torch.searchsorted(self.parents, truth.parent_G.to(device)[self.children])
        F, P, C = sae.n_latents, len(self.parents), len(self.children)

        def zeros(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.zeros(n, dtype=dtype, device=device)

        self.tp, self.fp, self.fn, self.tn = (zeros(F) for _ in range(4))
        self.child_rows, self.child_absorbed, self.child_share = zeros(C), zeros(C), zeros(C)
        self.control_rows, self.control_absorbed, self.control_share = zeros(P), zeros(P), zeros(P)
        self.firing_G = zeros(G)
        self.rows = 0
        self.active_sum = 0.0
        self.shrink_sum, self.shrink_rows = 0.0, 0

    @torch.inference_mode()
    def add(self, z_BF: torch.Tensor, scale_B: torch.Tensor, x_BD: torch.Tensor, x_hat_BD: torch.Tensor,
            ids_BS: np.ndarray, coefs_BS: np.ndarray) -> None:
        """One chunk of rows: the SAE's latents, each row's normalisation scale (1 without layer norm), the rows and
        their reconstructions in activation space, and the rows' ground truth."""
        for a in range(0, len(z_BF), SUB_ROWS):
            b = min(a + SUB_ROWS, len(z_BF))
            coef_BG = dense_rows(ids_BS[a:b], coefs_BS[a:b], self.truth.n_features, self.device)
            self._add(z_BF[a:b], scale_B[a:b], coef_BG)
        norm_x = x_BD.double().norm(dim=1)
        ok = norm_x > 1e-6
        self.shrink_sum += float((x_hat_BD.double().norm(dim=1)[ok] / norm_x[ok]).sum())
        self.shrink_rows += int(ok.sum())

    def _add(self, z_BF: torch.Tensor, scale_B: torch.Tensor, coef_BG: torch.Tensor) -> None:
        on_BG = coef_BG > 0
        self.rows += len(z_BF)
        self.active_sum += float(on_BG.sum())
        self.firing_G += on_BG.sum(dim=0)
        fires_BF = z_BF != 0
        feature_BF = on_BG[:, self.best_feature_F]
        self.tp += (fires_BF & feature_BF).sum(dim=0)
        self.fp += (fires_BF & ~feature_BF).sum(dim=0)
        self.fn += (~fires_BF & feature_BF).sum(dim=0)
        self.tn += (~fires_BF & ~feature_BF).sum(dim=0)
        if not len(self.parents):
            return
        z = z_BF.float()
        coef_BP = coef_BG[:, self.parents]
        parent_on = coef_BP > 0
        along_BP = (z @ self.along_FP) * scale_B[:, None]
        learned = self.parent_latent >= 0
        latent = self.parent_latent.clamp(min=0)
        z_parent_BP = torch.where(learned, z[:, latent], torch.zeros((), device=z.device))
        own_BP = z_parent_BP * self.own_P * scale_B[:, None]
        share_BP = torch.where(parent_on, own_BP / coef_BP.clamp(min=1e-30), torch.zeros((), device=z.device))
        absorbed_BP = m.absorbed(z_parent_BP, along_BP, coef_BP) & parent_on & learned
        child_on_BC = on_BG[:, self.children]
        any_child_BP = torch.zeros_like(coef_BP).index_add_(1, self.pair_parent, child_on_BC.float()) > 0
        pp = self.pair_parent
        self.child_rows += child_on_BC.sum(dim=0)
        self.child_absorbed += (child_on_BC & absorbed_BP[:, pp]).sum(dim=0)
        self.child_share += torch.where(child_on_BC, share_BP[:, pp], torch.zeros((), device=z.device)).sum(dim=0)
        control = parent_on & ~any_child_BP
        self.control_rows += control.sum(dim=0)
        self.control_absorbed += (control & absorbed_BP).sum(dim=0)
        self.control_share += torch.where(control, share_BP, torch.zeros((), device=z.device)).sum(dim=0)

    def result(self, group_bounds: list[tuple[int, int]], live_F: np.ndarray) -> GroundTruthRecord:
        """The record; ``live_F``: the latents that fired on the evaluated rows."""
        cls = m.classification(*(t.cpu().numpy() for t in (self.tp, self.fp, self.fn, self.tn)))
        best_feature = self.best_feature_F.cpu().numpy()
        best_cos = self.best_cos_F.cpu().numpy()
        pairs = self._pairs()
        scored = [p for p in pairs if p is not None]
        by_depth = []
        for depth in sorted({p.depth for p in scored}):
            at = [p for p in scored if p.depth == depth]
            by_depth.append(TruthDepth(depth=depth, pairs=len(at), absorption=_mean([p.absorption for p in at]),
                                       partial_absorption=_mean([p.partial_absorption for p in at])))
        unlearned = int((self.parent_latent[self.pair_parent] < 0).sum())
        firing = (self.firing_G / max(self.rows, 1)).cpu().numpy()
        depth_G = self.truth.depth_G.numpy()
        groups = []
        for k, g in enumerate(m.group_depths(best_feature, best_cos, depth_G, group_bounds), start=1):
            rates = firing[g["features"]]
            groups.append(TruthGroup(group=k, latents=g["latents"], matched=g["matched"],
                                     depth_counts=g["depth_counts"], mean_depth=_or_none(g["mean_depth"]),
                                     mean_firing_rate=float(rates.mean()) if len(rates) else None))
        unique = best_feature[(best_cos >= m.COSINE_BAR) & live_F]
        return GroundTruthRecord(
            mcc=self.matching.mcc, uniqueness=self.uniqueness, precision=cls.precision, recall=cls.recall,
            f1=cls.f1, accuracy=cls.accuracy, true_l0=self.active_sum / max(self.rows, 1),
            shrinkage=self.shrink_sum / max(self.shrink_rows, 1),
            matched_features=int((self.matching.cosine >= m.COSINE_BAR).sum()),
            unique_features=len(np.unique(unique)), cosine_bar=m.COSINE_BAR,
            directions=DIRECTIONS[self.sae.cfg.norm],
            absorption=_or_none(_mean([p.absorption for p in scored])),
            partial_absorption=_or_none(_mean([p.partial_absorption for p in scored])),
            pairs_scored=len(scored), pairs_unlearned=unlearned,
            pairs_few_rows=len(pairs) - len(scored) - unlearned, by_depth=by_depth, pairs=scored, groups=groups,
            rows=self.rows)

    def _pairs(self) -> list[TruthPair | None]:
        """Every (parent, child) pair: its score, or None (parent without a latent at the bar, or too few rows)."""
        out = []
        depth = self.truth.depth_G
        parents, children = self.parents.cpu(), self.children.cpu()
        pp = self.pair_parent.cpu()
        learned = (self.parent_latent >= 0).cpu()
        # One copy to the host each, not one per element (a sync each on a GPU).
        child_rows, child_absorbed, child_share = (t.tolist() for t in (
            self.child_rows, self.child_absorbed, self.child_share))
        control_rows, control_absorbed, control_share = (t.tolist() for t in (
            self.control_rows, self.control_absorbed, self.control_share))
        for c in range(len(children)):
            p = int(pp[c])
            counts = m.PairCounts(
                child_rows=int(child_rows[c]), child_absorbed=int(child_absorbed[c]),
                child_share=float(child_share[c]), control_rows=int(control_rows[p]),
                control_absorbed=int(control_absorbed[p]), control_share=float(control_share[p]))
            score = m.pair_score(counts) if bool(learned[p]) else None
            out.append(None if score is None else TruthPair(
                parent=int(parents[p]), child=int(children[c]), depth=int(depth[parents[p]]),
                child_rows=counts.child_rows, control_rows=counts.control_rows,
                absorbed_with_child=score.child_rate, absorbed_control=score.control_rate,
                absorption=score.absorption, partial_absorption=score.partial))
        return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _or_none(v: float) -> float | None:
    return None if math.isnan(v) else v
