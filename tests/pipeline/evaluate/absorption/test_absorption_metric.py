"""Absorption on a constructed case whose answer is known, and the metric's units: real probes trained on
synthetic residuals, toy SAEs with planted absorbing latents (no LM: fast)."""

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from fit.config import SAEConfig
from fit.export import saelens_tensors
from fit.sae import SAE
from pipeline.evaluate.absorption.cache import ProbeCache
from pipeline.evaluate.absorption.ksparse import balanced_logistic
from pipeline.evaluate.absorption.probe import ProbeSettings, one_hot, train_multi_probe
from pipeline.evaluate.absorption.score import score_sae
from pipeline.evaluate.absorption.vocab import LETTERS, first_letter, split_words
from pipeline.evaluate.record import AbsorptionRecord

D = 96
LETTER, ABSORBED = "s", 3
SCALE = (D / 13) ** 0.5  # every row: 3 u_letter + 2 v_word, norm sqrt(13), scaled to norm sqrt(D)


def basis(seed: int = 0) -> torch.Tensor:
    """D-1 orthonormal columns, all orthogonal to the ones vector: rows built from them have zero mean, so layer
    norm leaves a row of norm sqrt(D) as it is."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(D, D, generator=g, dtype=torch.float64)
    m[:, 0] = 1.0
    q, _ = torch.linalg.qr(m)
    return q[:, 1:].float()


@pytest.fixture(scope="module")
def case():
    """Words, their residuals, a trained probe, and the planted absorbed words of letter s."""
    q = basis()
    u = q[:, :26]  # a direction per letter
    absorbed_dirs = q[:, 26 : 26 + ABSORBED]  # a token direction per absorbed word
    noise = q[:, 26 + ABSORBED :]  # every other word's own direction lies here
    rng = random.Random(0)
    words = sorted({c + "".join(rng.choice(LETTERS) for _ in range(6))
                    for c in LETTERS for _ in range(60 if c == LETTER else 30)})  # s: more test words
    split = split_words(words, seed=1)
    absorbed = sorted(w for w in split.test if first_letter(w) == LETTER)[:ABSORBED]
    assert sum(first_letter(w) == LETTER for w in split.test) > 2 * ABSORBED  # s words left unabsorbed too
    g = torch.Generator().manual_seed(2)

    def residual(w: str) -> torch.Tensor:
        own = (absorbed_dirs[:, absorbed.index(w)] if w in absorbed
               else noise @ torch.nn.functional.normalize(torch.randn(noise.shape[1], generator=g), dim=0))
        return SCALE * (3 * u[:, LETTERS.index(first_letter(w))] + 2 * own)

    acts = {name: torch.stack([residual(w) for w in getattr(split, name)]) for name in ("train", "test")}
    labels = torch.tensor([LETTERS.index(first_letter(w)) for w in split.train])
    s = ProbeSettings()  # SAEBench's, but a faster schedule: these residuals are clean, the test must be quick
    probe = train_multi_probe(acts["train"], one_hot(labels), epochs=30, lr=5e-2, end_lr=1e-4,
                              weight_decay=s.weight_decay, batch_size=s.batch_size, seed=0)
    meta = {"spec": {"seed": 0, "model": "synthetic", "layer": 0, "template": "{word} has the first letter:",
                     "icl_examples": 10}, "vocabulary_words": len(words), "words_file": None, "word_position": -6,
            "probe_test_accuracy": 1.0}
    cache = ProbeCache(Path("synthetic"), split.train, split.test, acts["train"], acts["test"], probe, meta)
    return cache, u, absorbed_dirs, absorbed


def planted_sae(u: torch.Tensor, absorbed_dirs: torch.Tensor, norm: str = "none") -> SAE:
    """A main latent per letter (reads and writes its letter's direction), silenced on the absorbed words, whose
    own latents fire instead and write (u_s + v_word) / sqrt(2): aligned with the probe, carrying its projection."""
    sae = SAE(SAEConfig(variant="baseline", norm=norm, expansion=1.0), D)
    s = LETTERS.index(LETTER)
    g = torch.Generator().manual_seed(3)
    W_enc = torch.nn.functional.normalize(torch.randn(D, D, generator=g), dim=0)
    b_enc = torch.full((D,), -1000.0)  # the latents not planted never fire
    W_dec = torch.nn.functional.normalize(torch.randn(D, D, generator=g), dim=1)
    W_enc[:, :26], b_enc[:26], W_dec[:26] = u, -4.0, u.T
    W_enc[:, s] = u[:, s] - 10 * absorbed_dirs.sum(dim=1)
    for i in range(absorbed_dirs.shape[1]):
        j = 26 + i
        W_enc[:, j], b_enc[j] = 2 * absorbed_dirs[:, i], -1.0  # a margin over float32 rounding
        W_dec[j] = (u[:, s] + absorbed_dirs[:, i]) / 2**0.5
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.zero_()
    return sae


def per_letter(record) -> dict[str, tuple[float, float, list[int]]]:
    return {r.letter: (r.full_absorption_rate, r.absorption_fraction, r.main_latents) for r in record.letters}


@pytest.fixture(scope="module")
def planted(case):
    """The planted SAE (no normalisation) and its score."""
    cache, u, absorbed_dirs, _ = case
    sae = planted_sae(u, absorbed_dirs)
    return sae, score_sae(sae, cache)


def test_the_planted_absorption_rate_is_found_exactly(planted):
    _sae, record = planted
    assert record.excluded_letters == [] and record.enough_letters and len(record.letters) == 26
    s = next(r for r in record.letters if r.letter == LETTER)
    assert s.probe_true_positives == s.test_words  # the probe finds every s word, the absorbed ones too
    assert s.main_latents == [LETTERS.index(LETTER)]
    assert s.full_absorptions == ABSORBED
    assert s.full_absorption_rate == s.absorption_fraction == ABSORBED / s.test_words
    for r in record.letters:
        if r.letter != LETTER:
            assert (r.full_absorption_rate, r.absorption_fraction) == (0.0, 0.0), r.letter
            assert r.main_latents == [LETTERS.index(r.letter)]
    assert record.mean_full_absorption == pytest.approx(ABSORBED / s.test_words / 26)
    assert record.sae_l0 == 1.0
    assert AbsorptionRecord.from_dict(json.loads(json.dumps(record.to_dict())), "eval.json") == record
    # the planted main latents predict their letters: no caveat; latents that do not would get one
    assert record.mean_main_latents_f1 == pytest.approx(sum(r.main_latents_f1 for r in record.letters) / 26)
    assert record.weak_main_latents() is None
    weak = dataclasses.replace(record, mean_main_latents_f1=0.1)
    assert "no first-letter latents" in weak.weak_main_latents()


def store_stats_version(raw: SAE, mean: torch.Tensor, std: torch.Tensor) -> SAE:
    """The same function of the raw residual as ``raw`` (norm none), written as a store-statistics SAE."""
    sae = SAE(SAEConfig(variant="baseline", norm="store_stats", expansion=1.0), D, store_mean=mean,
              store_std=std)
    with torch.no_grad():
        sae.W_enc.copy_(raw.W_enc * std[:, None])
        sae.b_enc.copy_(raw.b_enc + mean @ raw.W_enc)
        sae.W_dec.copy_(raw.W_dec / std)
        sae.b_dec.copy_((raw.b_dec - mean) / std)
    return sae


def folded(sae: SAE) -> SAE:
    """The SAELens export's weights (normalisation folded in) loaded back as a norm-none SAE."""
    tensors, norm = saelens_tensors(sae)
    assert norm == "none"
    out = SAE(SAEConfig(variant="baseline", norm="none", expansion=1.0), D)
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(out, name).copy_(value)
    return out


def test_store_statistics_and_their_fold_into_the_weights_score_the_same(case, planted):
    cache = case[0]
    raw, raw_record = planted
    g = torch.Generator().manual_seed(4)
    stats = store_stats_version(raw, torch.randn(D, generator=g), torch.rand(D, generator=g) * 3 + 0.2)
    scores = [per_letter(raw_record), *(per_letter(score_sae(sae, cache)) for sae in (stats, folded(stats)))]
    assert scores[0][LETTER][0] > 0  # a case with absorption to compare
    for other in scores[1:]:
        for letter, (full, fraction, main) in scores[0].items():
            assert other[letter][0] == full and other[letter][2] == main
            assert other[letter][1] == pytest.approx(fraction, abs=1e-6)


def test_a_layer_normed_sae_scores_the_same_on_scaled_input(case, planted):
    """Layer norm is scale invariant; so is the metric, its projections being in raw units: the residual and the
    probe's bias scaled by c (the probe the scaled residual trains to) give the same rates. (SAEBench's
    z * cos(W_dec, probe), in layer-normed units, shrinks against the raw probe projection as c grows.)"""
    cache, u, absorbed_dirs, _ = case
    sae = planted_sae(u, absorbed_dirs, norm="layer_norm")
    base = per_letter(score_sae(sae, cache))
    assert base[LETTER][0] > 0 and base == per_letter(planted[1])  # these rows are already layer-normed
    for c in (37.0,):
        scaled = ProbeCache(cache.folder, cache.train_words, cache.test_words, cache.acts_train * c,
                            cache.acts_test * c, type(cache.probe)(cache.probe.weight, cache.probe.bias * c),
                            cache.meta)
        assert per_letter(score_sae(sae, scaled)) == base


def test_a_weak_probe_excludes_its_letter_with_the_reason(case):
    cache, u, absorbed_dirs, _ = case
    weight = cache.probe.weight.clone()
    weight[LETTERS.index("q")] = -weight[LETTERS.index("q")]  # the q probe now fires on everything but q
    broken = ProbeCache(cache.folder, cache.train_words, cache.test_words, cache.acts_train, cache.acts_test,
                        type(cache.probe)(weight, cache.probe.bias), cache.meta)
    record = score_sae(planted_sae(u, absorbed_dirs), broken)
    assert [(e.letter, "F1" in e.reason and "0.6" in e.reason) for e in record.excluded_letters] == [("q", True)]
    assert len(record.letters) == 25 and "q" not in {r.letter for r in record.letters}


def test_balanced_logistic_solves_its_optimality_conditions():
    """sklearn's LogisticRegression(class_weight="balanced", C=1) objective: its gradient is zero at our fit."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 200, 4, generator=g, dtype=torch.float64)
    y = (x[:, :, 0] + 0.5 * torch.randn(3, 200, generator=g, dtype=torch.float64) > 0.8).double()
    w, b = balanced_logistic(x, y)
    n_pos = y.sum(dim=1, keepdim=True)
    s = torch.where(y > 0, 200 / (2 * n_pos), 200 / (2 * (200 - n_pos)))
    r = s * (torch.sigmoid(torch.einsum("lnk,lk->ln", x, w.double()) + b.double()[:, None]) - y)
    assert torch.einsum("lnk,ln->lk", x, r).add(w.double()).abs().max() < 1e-4  # d/dw: X^T s (p - y) + w
    assert r.sum(dim=1).abs().max() < 1e-4  # d/db: intercept unpenalised
