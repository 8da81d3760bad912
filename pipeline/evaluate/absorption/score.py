"""The absorption rules (SAEBench's ``feature_absorption_calculator.py``), per word, per letter, per SAE.

Units. The probe reads the raw residual x; an SAE may read a normalised x_n = (x - shift) / scale (per-row
layer norm, or the store's per-dimension statistics). Latent j's contribution to the reconstruction in raw
units is z_j * scale * W_dec[j] (elementwise per dimension for store statistics, times the row's std for layer
norm), and every projection onto the probe below is of that raw contribution: for store statistics the raw
decoder direction d_j = W_dec[j] * std_D, for layer norm d_j = W_dec[j] with z_j scaled by the row's std.
SAEBench instead projects z_j * cos(W_dec[j], probe), in whatever units z is, onto a raw-unit probe projection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from fit.sae import SAE
from pipeline.evaluate.absorption.cache import ProbeCache, cache_root, load_or_build
from pipeline.evaluate.absorption.ksparse import KSparseSettings, main_latents, rank_latents
from pipeline.evaluate.absorption.probe import letter_f1s
from pipeline.evaluate.absorption.vocab import LETTERS
from pipeline.evaluate.record import AbsorptionExcluded, AbsorptionLetter, AbsorptionRecord
from store.reader import ActivationStore

log = logging.getLogger(__name__)

EPS = 1e-8
"""A main latent at or below this is silent (SAEBench's EPS)."""
ENCODE_BATCH = 4096
PRECOMPUTE_ELEMENTS = 2**27
"""Latent matrices up to this many elements (512 MB in float32) are kept whole; larger ones are encoded per
batch as they are needed (the full vocabulary on a wide SAE)."""


@dataclass(frozen=True)
class AbsorptionSettings:
    """SAEBench's thresholds (``feature_absorption.py``, ``AbsorptionEvalConfig``)."""

    min_probe_f1: float = 0.6
    """min_GT_probe_f1: a letter's probe must exceed this test F1 for the letter to count."""
    min_letters: int = 20
    """min_feats_for_eval: SAEBench scores nothing with fewer qualifying letters; we score and say so."""
    full_cos: float = 0.025
    """FULL_ABSORPTION_PROBE_COS_THRESHOLD: the top projecting latent's least cosine with the probe."""
    fraction_cos: float = 0.1
    """ABSORPTION_FRACTION_PROBE_COS_THRESHOLD: a potential absorber's least cosine with the probe."""
    proportion: float = 0.4
    """ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD: the absorbers' least share of the probe projection."""
    max_absorbers: int = 3
    """ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS."""
    ksparse: KSparseSettings = field(default_factory=KSparseSettings)


class RawLatents:
    """An SAE seen from the raw residual: its latents and each latent's decoder direction in raw units."""

    def __init__(self, sae: SAE) -> None:
        self.sae = sae
        self.n_latents = sae.n_latents
        probe_x = torch.zeros(1, sae.d_model, device=sae.W_dec.device)
        scale = sae.normalise(probe_x + 1).scale
        per_dim = scale.ndim == 1
        self.directions_FD = (sae.W_dec * scale if per_dim else sae.W_dec).detach().float()
        self._per_row = scale.ndim == 2

    @torch.inference_mode()
    def encode(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents z (B, F) and each row's scale (B,): latent j adds z_j * scale * directions_FD[j] to x."""
        norm = self.sae.normalise(x_BD)
        z = self.sae.encode(norm.x_BD).float()
        row = norm.scale[:, 0] if self._per_row else torch.ones(len(x_BD), device=x_BD.device)
        return z, row.float()

    def latents(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encode(x_ND[lo : lo + ENCODE_BATCH])[0] for lo in range(0, len(x_ND), ENCODE_BATCH)])

    def columns(self, x_ND: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encode(x_ND[lo : lo + ENCODE_BATCH])[0][:, ids]
                          for lo in range(0, len(x_ND), ENCODE_BATCH)])


@dataclass
class WordScores:
    """Per probe-true-positive word of one letter."""

    full: torch.Tensor  # (B,) bool: fully absorbed
    fraction: torch.Tensor  # (B,) absorption fraction in [0, 1]


@torch.inference_mode()
def word_scores(z_BF: torch.Tensor, row_B: torch.Tensor, directions_FD: torch.Tensor, x_BD: torch.Tensor,
                probe_D: torch.Tensor, main: Sequence[int], s: AbsorptionSettings) -> WordScores:
    """SAEBench's per-word rules, every projection in raw residual units (module docstring).

    P = x . p (p the unit probe direction); pi_j = z_j * row * (d_j . p); cos_j = cos(d_j, p).
    Full absorption: every main latent silent, the latent of largest pi_j has cos_j >= full_cos, P >= 0 and
    pi_top / P >= proportion. Absorption fraction: with M = sum of pi over the main latents and A = the sum of
    the (at most max_absorbers) largest positive pi_j of non-main latents with cos_j >= fraction_cos:
    0 if M >= P or A / P < proportion; else 1 if M <= 0; else min(A, P - M) / (min(A, P - M) + M).
    """
    p = probe_D.float() / probe_D.float().norm()
    along_F = directions_FD @ p
    cos_F = along_F / directions_FD.norm(dim=1).clamp_min(1e-30)
    pi_BF = z_BF * row_B[:, None] * along_F[None, :]
    P = x_BD.float() @ p
    main_ids = torch.tensor(list(main), dtype=torch.long, device=z_BF.device)
    is_main = torch.zeros(z_BF.shape[1], dtype=torch.bool, device=z_BF.device)
    is_main[main_ids] = True
    M = pi_BF[:, main_ids].sum(dim=1)

    absorber = (~is_main)[None, :] & (cos_F >= s.fraction_cos)[None, :] & (pi_BF > 0)
    A = torch.where(absorber, pi_BF, 0).topk(min(s.max_absorbers, z_BF.shape[1]), dim=1).values.sum(dim=1)
    share = torch.where(P != 0, A / torch.where(P != 0, P, 1), 0)
    absorbed = torch.minimum(A, P - M)
    partial = (absorbed / (absorbed + M)).clamp(0, 1)
    fraction = torch.where((M >= P) | (share < s.proportion), 0.0, torch.where(M <= 0, 1.0, partial))

    top = pi_BF.argmax(dim=1)
    pi_top = pi_BF.gather(1, top[:, None])[:, 0]
    silent = (z_BF[:, main_ids] < EPS).all(dim=1)
    full = silent & (cos_F[top] >= s.full_cos) & (P > 0) & (pi_top >= s.proportion * P)
    return WordScores(full, fraction)


def score_sae(sae: SAE, cache: ProbeCache, settings: AbsorptionSettings = AbsorptionSettings(),
              seed: int | None = None) -> AbsorptionRecord:
    """Absorption of one SAE from a loaded cache (on the SAE's device)."""
    t0 = time.perf_counter()
    seed = cache.meta["spec"]["seed"] if seed is None else seed
    raw = RawLatents(sae)
    x_train, x_test = cache.acts_train, cache.acts_test
    y_train, y_test = cache.labels_train, cache.labels_test
    F = raw.n_latents
    z_train = raw.latents(x_train) if len(x_train) * F <= PRECOMPUTE_ELEMENTS else None
    z_test = raw.latents(x_test) if len(x_test) * F <= PRECOMPUTE_ELEMENTS else None
    ranked = rank_latents(z_train, lambda xb: raw.encode(xb)[0], x_train, y_train, F, settings.ksparse, seed)
    mains = main_latents(
        ranked,
        (lambda ids: z_train[:, ids]) if z_train is not None else (lambda ids: raw.columns(x_train, ids)),
        y_train,
        (lambda ids: z_test[:, ids]) if z_test is not None else (lambda ids: raw.columns(x_test, ids)),
        y_test, settings.ksparse)
    logits = cache.probe.logits(x_test)
    f1s = letter_f1s(logits, y_test)
    l0 = float((z_test > 0).sum(dim=1).float().mean()) if z_test is not None else _mean_l0(raw, x_test)

    letters, excluded = [], []
    for c, letter in enumerate(LETTERS):
        n_test = int((y_test == c).sum())
        reason = None
        tp = (y_test == c) & (logits[:, c] > 0)
        if n_test == 0:
            reason = "no test word starts with it"
        elif f1s[c] <= settings.min_probe_f1:
            reason = f"its probe's test F1 {f1s[c]:.3f} is not above {settings.min_probe_f1}"
        elif not bool(tp.any()):
            reason = "its probe fires on none of its test words"
        if reason is not None:
            excluded.append(AbsorptionExcluded(letter=letter, reason=reason, test_words=n_test, probe_f1=f1s[c]))
            continue
        z, row = raw.encode(x_test[tp])
        w = word_scores(z, row, raw.directions_FD, x_test[tp], cache.probe.weight[c], mains[c].latents, settings)
        n_tp = int(tp.sum())
        letters.append(AbsorptionLetter(
            letter=letter, test_words=n_test, probe_f1=f1s[c], probe_true_positives=n_tp,
            main_latents=mains[c].latents, main_latents_f1=mains[c].f1, full_absorptions=int(w.full.sum()),
            full_absorption_rate=int(w.full.sum()) / n_tp, absorption_fraction=float(w.fraction.sum()) / n_tp))
    meta = cache.meta
    n = len(letters)
    record = AbsorptionRecord(
        mean_full_absorption=sum(r.full_absorption_rate for r in letters) / n if n else None,
        mean_absorption_fraction=sum(r.absorption_fraction for r in letters) / n if n else None,
        mean_main_latents=sum(len(r.main_latents) for r in letters) / n if n else None,
        mean_main_latents_f1=sum(r.main_latents_f1 for r in letters) / n if n else None,
        letters=letters, excluded_letters=excluded, enough_letters=n >= settings.min_letters,
        min_letters=settings.min_letters, min_probe_f1=settings.min_probe_f1, sae_l0=l0,
        model=meta["spec"]["model"], layer=meta["spec"]["layer"],
        words=len(cache.train_words) + len(cache.test_words), train_words=len(cache.train_words),
        test_words=len(cache.test_words), vocabulary_words=meta["vocabulary_words"], words_file=meta["words_file"],
        seed=meta["spec"]["seed"], prompt_template=meta["spec"]["template"],
        icl_examples=meta["spec"]["icl_examples"], word_position=meta["word_position"],
        probe_test_accuracy=meta["probe_test_accuracy"], cache=str(cache.folder),
        seconds=time.perf_counter() - t0)
    return record


def _mean_l0(raw: RawLatents, x_ND: torch.Tensor) -> float:
    total = sum(int((raw.encode(x_ND[lo : lo + ENCODE_BATCH])[0] > 0).sum())
                for lo in range(0, len(x_ND), ENCODE_BATCH))
    return total / max(len(x_ND), 1)


def absorption_records(store: ActivationStore, url: str, saes: dict[str, SAE], *, words: int | None,
                       words_file: str | None, seed: int, cache_dir: str | None, device: torch.device,
                       model: str | None = None,
                       on_progress: Callable[[int, int], None] | None = None) -> dict[str, AbsorptionRecord]:
    """Each SAE's absorption on the store's model and layer, from one cache (built once when absent; its LM passes
    reported to ``on_progress(prompts done, prompts)``)."""
    cache = load_or_build(store.meta, cache_root(url, cache_dir), words=words, words_file=words_file, seed=seed,
                          device=device, model=model, on_progress=on_progress).to(device)
    out = {}
    for name, sae in saes.items():
        out[name] = record = score_sae(sae, cache, seed=seed)
        log.info("%s: absorption %s letters qualify of 26, mean full absorption %s, mean absorption fraction %s "
                 "(%.0f s)", name, len(record.letters), _fmt(record.mean_full_absorption),
                 _fmt(record.mean_absorption_fraction), record.seconds)
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
