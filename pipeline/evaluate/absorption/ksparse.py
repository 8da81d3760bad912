"""Each letter's main latents: SAEBench's k-sparse probing (``k_sparse_probing.py``) and its F1-jump rule.

1. An L1-penalised one-vs-rest probe on the SAE's latents of the train words ranks the latents per letter by
   their (signed) weight. It starts from zero weights where SAEBench starts from nn.Linear's random ones
   (uniform within 1/sqrt(F)): with Adam the L1 gradient moves a never-active latent's weight by at most the
   summed learning rate, about 0.08 over SAEBench's 50 epochs of one batch each (a subsampled vocabulary), so
   the leftover initial noise can outrank a real latent; from zero it cannot.
2. For k = 1..max_k, a logistic regression on the letter's top-k latents (sklearn's ``LogisticRegression(
   class_weight="balanced")``: L2 penalty with C = 1, intercept unpenalised; solved here exactly by Newton's
   method) is scored by its F1 on the test words (score > 0 predicts the letter).
3. The main latents are the top-k at the last k whose F1 beat the previous best by more than ``jump`` (k = 1
   always counts; the first k that does not improve enough stops the search).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.evaluate.absorption.probe import f1_score, one_hot, train_multi_probe


@dataclass(frozen=True)
class KSparseSettings:
    """SAEBench's defaults (``AbsorptionEvalConfig``)."""

    max_k: int = 10
    jump: float = 0.03
    """f1_jump_threshold."""
    l1: float = 0.01
    """k_sparse_probe_l1_decay."""
    epochs: int = 50
    batch_size: int = 4096
    lr: float = 0.01
    end_lr: float = 1e-5
    weight_decay: float = 1e-6


@dataclass
class MainLatents:
    """A letter's main latents and the k-sparse F1 at each k tried."""

    latents: list[int]
    f1: float
    f1_by_k: list[float]


def rank_latents(z_train_NF: torch.Tensor | None, encode, x_train_ND: torch.Tensor, labels_N: torch.Tensor,
                 n_latents: int, settings: KSparseSettings, seed: int) -> torch.Tensor:
    """(26, max_k) latent ids per letter, largest L1-probe weight first. ``z_train_NF`` when the latents fit in
    memory, else ``encode`` maps each batch of ``x_train_ND`` to its latents (SAEBench's ``map_acts``)."""
    x, map_x = (z_train_NF, None) if z_train_NF is not None else (x_train_ND, encode)
    probe = train_multi_probe(x, one_hot(labels_N), epochs=settings.epochs, lr=settings.lr,
                              end_lr=settings.end_lr, weight_decay=settings.weight_decay,
                              batch_size=settings.batch_size, seed=seed, map_x=map_x, dim=n_latents,
                              l1=settings.l1, zero_init=True)
    return probe.weight.topk(min(settings.max_k, n_latents), dim=-1).indices


def balanced_logistic(x_LNk: torch.Tensor, y_LN: torch.Tensor, iters: int = 100,
                      tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """L independent fits of sklearn's ``LogisticRegression(class_weight="balanced")`` (C = 1): minimise
    sum_i s_i log(1 + exp(-(2y_i - 1) f_i)) + |w|^2 / 2, f = x w + b, s_i = N / (2 N_class(y_i)). Newton steps
    with backtracking, in float64. Returns (w (L, k), b (L,))."""
    x = x_LNk.double()
    y = y_LN.double()
    L, N, k = x.shape
    n_pos = y.sum(dim=1, keepdim=True)
    s = torch.where(y > 0, N / (2 * n_pos.clamp_min(1)), N / (2 * (N - n_pos).clamp_min(1)))
    X = torch.cat([x, torch.ones(L, N, 1, dtype=x.dtype, device=x.device)], dim=2)  # last column: intercept
    reg = torch.ones(k + 1, dtype=x.dtype, device=x.device)
    reg[-1] = 0
    theta = torch.zeros(L, k + 1, dtype=x.dtype, device=x.device)

    def objective(th: torch.Tensor) -> torch.Tensor:
        f = (X @ th[:, :, None]).squeeze(-1)
        return (s * (torch.nn.functional.softplus(f) - y * f)).sum(dim=1) + 0.5 * (reg * th * th).sum(dim=1)

    obj = objective(theta)
    for _ in range(iters):
        f = (X @ theta[:, :, None]).squeeze(-1)
        p = torch.sigmoid(f)
        grad = (X * (s * (p - y))[:, :, None]).sum(dim=1) + reg * theta
        H = (X * (s * p * (1 - p))[:, :, None]).transpose(1, 2) @ X + torch.diag_embed(reg.expand(L, -1))
        H = H + 1e-12 * torch.eye(k + 1, dtype=x.dtype, device=x.device)  # an all-zero latent column
        step = torch.linalg.solve(H, grad[:, :, None]).squeeze(-1)
        if bool(((grad * step).sum(dim=1) <= 2 * tol * (1 + obj.abs())).all()):
            break  # Newton decrement: every fit is at its optimum to ~tol of its objective
        t = torch.ones(L, 1, dtype=x.dtype, device=x.device)
        new = objective(theta - t * step)
        for _ in range(30):  # halve each fit's step until its objective does not rise
            worse = (new > obj + 1e-12 * obj.abs())[:, None]
            if not worse.any():
                break
            t = torch.where(worse, t / 2, t)
            new = objective(theta - t * step)
        theta = theta - t * step
        obj = new
    return theta[:, :k].float(), theta[:, k].float()


Columns = Callable[[torch.Tensor], torch.Tensor]
"""Latent ids (m,) -> those latents' activations on every word of a split (N, m)."""


def main_latents(ranked_LK: torch.Tensor, train_cols: Columns, y_train_N: torch.Tensor, test_cols: Columns,
                 y_test_N: torch.Tensor, settings: KSparseSettings) -> list[MainLatents]:
    """Per letter, the k-sparse probes' test F1 for k = 1..max_k and the F1-jump rule's main latents."""
    n_letters, max_k = ranked_LK.shape
    f1 = torch.zeros(n_letters, max_k)
    letters = torch.arange(n_letters, device=y_train_N.device)
    z_train = train_cols(ranked_LK.flatten()).view(len(y_train_N), n_letters, max_k)
    z_test = test_cols(ranked_LK.flatten()).view(len(y_test_N), n_letters, max_k)
    for k in range(1, max_k + 1):
        x_train = z_train[:, :, :k].permute(1, 0, 2)  # (L, N, k): letter l's top-k latents
        w, b = balanced_logistic(x_train, (y_train_N[None, :] == letters[:, None]).float())
        scores = torch.einsum("lnk,lk->ln", z_test[:, :, :k].permute(1, 0, 2), w) + b[:, None]
        for c in range(n_letters):
            f1[c, k - 1] = f1_score(scores[c] > 0, y_test_N == c)
    out = []
    for c in range(n_letters):
        best, chosen = -100.0, 0
        for k in range(1, max_k + 1):
            if float(f1[c, k - 1]) > best + settings.jump:
                best, chosen = float(f1[c, k - 1]), k
            else:
                break
        out.append(MainLatents(ranked_LK[c, :chosen].tolist(), best, f1[c].tolist()))
    return out
