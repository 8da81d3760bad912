"""The fast sampler draws SAELens's distribution: tested against SAELens's own sampler statistically (firing rates,
co-firing of the most correlated pairs, coefficient distributions), and the forest's rules exactly."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, ks_2samp

from harvest.synthetic.sampler import BLOCK_ROWS, FastSampler, SaeLensSampler, Stream, distinct_rows
from store.truth import dense_rows, list_problems

ROWS = 120_000


def draw(sampler, rows: int, seed: int) -> torch.Tensor:
    """``rows`` rows' dense coefficients (B, G)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [sampler.sample(BLOCK_ROWS, gen) for _ in range(rows // BLOCK_ROWS)]
    return torch.cat([dense_rows(*b.padded(), sampler.dictionary_GD.shape[0]) for b in blocks])


@pytest.fixture(scope="module")
def both(small_truth) -> tuple[torch.Tensor, torch.Tensor]:
    cpu = torch.device("cpu")
    return draw(FastSampler(small_truth, cpu), ROWS, 0), draw(SaeLensSampler(small_truth, cpu), ROWS, 1)


def z_scores(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """Two-proportion z-scores of rates ``a`` and ``b``, each over ``n`` rows."""
    pooled = (a + b) / 2
    return (a - b) / (2 * pooled * (1 - pooled) / n).sqrt().clamp(min=1e-12)


def test_every_features_firing_rate_matches_sae_lens(both):
    fast, ref = both
    a, b = (fast > 0).double().mean(0), (ref > 0).double().mean(0)
    z = z_scores(a, b, len(fast))
    # 256 features: under equal distributions |z| exceeds 4.5 with probability ~1e-3 for any of them.
    assert float(z.abs().max()) < 4.5, (int(z.abs().argmax()), float(a[z.abs().argmax()]), float(b[z.abs().argmax()]))
    assert abs(float(a.sum() - b.sum())) < 0.02 * float(b.sum())  # the mean L0


def test_correlated_pairs_fire_together_as_often_as_in_sae_lens(both, small_truth):
    fast, ref = both
    free = (small_truth.parent_G < 0).nonzero().flatten()  # pairs the forest does not tie together
    F = small_truth.correlation_factor_GQ[free]
    corr = F @ F.T
    corr.fill_diagonal_(0)
    top = torch.topk(corr.abs().flatten(), 20).indices
    i, j = free[top // len(free)], free[top % len(free)]
    a = ((fast[:, i] > 0) & (fast[:, j] > 0)).double().mean(0)
    b = ((ref[:, i] > 0) & (ref[:, j] > 0)).double().mean(0)
    assert float(z_scores(a, b, len(fast)).abs().max()) < 4.0
    # and the correlation is there at all: the most correlated pair co-fires more than independence would give
    pa, pb = (fast[:, i[0]] > 0).double().mean(), (fast[:, j[0]] > 0).double().mean()
    assert (float(a[0]) > float(pa * pb)) == bool(corr.flatten()[top[0]] > 0)


@pytest.mark.parametrize("which", ["root", "child", "grandchild", "outside"])
def test_coefficient_distributions_match_sae_lens(both, small_truth, which):
    fast, ref = both
    depth = small_truth.depth_G
    candidates = {"root": depth == 0, "child": depth == 1, "grandchild": depth == 2, "outside": depth < 0}[which]
    rates = (ref > 0).double().mean(0) * candidates
    g = int(rates.argmax())  # the most frequent feature of its kind: the most samples
    a, b = fast[:, g][fast[:, g] > 0], ref[:, g][ref[:, g] > 0]
    assert min(len(a), len(b)) > 200
    assert ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


def test_the_forest_holds_exactly_in_every_row(both, small_truth):
    fast, _ = both
    ids = torch.where(fast > 0, torch.arange(fast.shape[1]), -1)
    ids = torch.sort(torch.where(ids < 0, 1 << 30, ids), dim=1).values
    width = int((fast > 0).sum(1).max())
    ids = torch.where(ids[:, :width] == 1 << 30, -1, ids[:, :width])
    coefs = torch.where(ids >= 0, torch.gather(fast, 1, ids.clamp(min=0)), torch.zeros(()))
    assert list_problems(ids.numpy(), coefs.numpy(), small_truth) == []
    # the rules matter: exclusive parents with several children, scaled children
    assert bool(small_truth.exclusive_G.any()) and bool(small_truth.scale_children_G.any())


def test_distinct_rows_draws_every_subset_equally_often():
    gen = torch.Generator().manual_seed(0)
    counts = torch.full((20_000,), 3)
    owner, rows = distinct_rows(counts, 5, gen)
    subsets = Counter(tuple(sorted(rows[owner == j].tolist())) for j in range(2000))
    owner_rows = rows.reshape(-1, 3)
    assert all(len(set(r)) == 3 for r in owner_rows.tolist())
    observed = np.array([subsets[s] for s in sorted(subsets)])
    assert len(subsets) == math.comb(5, 3)
    assert chisquare(observed).pvalue > 1e-3


def test_the_stream_gives_the_same_rows_however_it_is_cut(small_truth):
    cpu = torch.device("cpu")
    a = Stream(FastSampler(small_truth, cpu), 7, cpu)
    b = Stream(FastSampler(small_truth, cpu), 7, cpu)
    whole = a.rows(1000, 9000)
    parts = [b.rows(5000, 9000), b.rows(1000, 5000)]  # another order, another cut
    assert torch.equal(whole.x_BD, torch.cat([parts[1].x_BD, parts[0].x_BD]))
    other = Stream(FastSampler(small_truth, cpu), 8, cpu).rows(1000, 9000)
    assert not torch.equal(whole.x_BD, other.x_BD)


def test_one_member_of_each_group_is_kept_uniformly():
    """The exclusive parent's choice among its active children: exactly one each, every member equally likely."""
    from harvest.synthetic.sampler import one_of_each

    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([1, 2, 3, 5, 40])
    group = torch.repeat_interleave(torch.arange(len(sizes)), sizes).repeat(4000)
    n_groups = len(sizes) * 4000
    group = group + torch.arange(4000).repeat_interleave(int(sizes.sum())) * len(sizes)
    keep = one_of_each(group, n_groups, gen)
    assert torch.equal(torch.bincount(group[keep], minlength=n_groups), torch.ones(n_groups, dtype=torch.long))
    # Each member of the 5-member group is kept ~1/5 of the time (4000 draws: within 5 standard deviations).
    first = int(sizes[:3].sum())
    place = torch.arange(len(group)) % int(sizes.sum())
    kept = torch.bincount(place[keep], minlength=int(sizes.sum()))[first:first + 5].float()
    assert ((kept - 800).abs() < 5 * (4000 * 0.2 * 0.8) ** 0.5).all(), kept
