"""Sampling rows from a synthetic model: a fast sparse sampler of the same distribution as SAELens's, SAELens's
own sampler as the reference, and the seeded row stream both serve.

**The model** (SAELens's ``ActivationGenerator`` with its hierarchy modifier and ``FeatureDictionary``), per row:

1. Which features fire: independently with probability ``p_g``, or through a Gaussian copula with correlation
   ``F F^T + diag(s^2)``: ``z = F eps + s eta`` (``eps ~ N(0, I_R)``, ``eta ~ N(0, I_G)``), feature g fires where
   ``z_g > t_g = Phi^-1(1 - p_g)``.
2. Each firing feature's coefficient: ``ReLU(mean_g + std_g N(0, 1))`` (a 0 is a feature that does not fire).
3. The forest, level by level from the roots: a child whose parent is not active is switched off (or, where the
   parent scales its children, multiplied by the parent's coefficient over its mean); then, where an exclusive
   parent is active and several of its children are, one of them, uniformly at random, is kept.
4. ``x = sum_g c_g d_g + b``.

**The fast sampler** draws the same distribution through the active pairs only. Given ``eps``, features fire
independently with ``q_bg = 1 - Phi((t_g - F_g eps_b) / s_g)``; it bounds ``q`` over a tile of rows by
``u_g = max_b q_bg`` (one small matmul), draws candidates with probability ``u_g`` (a binomial count per feature,
then that many distinct rows, uniformly) and keeps each with probability ``q_bg / u_g``: exactly Bernoulli(``q``),
at a cost that grows with the active pairs, not with rows x features. Features with ``u_g`` above
``DENSE_ABOVE`` are drawn densely instead. The forest is applied to the sorted pairs (a parent looked up by
binary search), and ``x`` summed from the active rows of the dictionary.

**The stream**: rows come in blocks of ``BLOCK_ROWS``; block j is sampled with a generator seeded from
``(seed, j)`` alone, so any row range (a store's chunk, a training batch, a resumed pass) is reproduced exactly,
on the same kind of device (CPU and CUDA generators give different numbers).

Shapes: B rows, G true features, D = d_model, Q the correlation's rank, S slots per row, P active pairs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol

import torch

from harvest.synthetic.config import SAMPLERS
from store.truth import NO_FEATURE, GroundTruth, pair_rows

BLOCK_ROWS = 4096
"""Rows per seeded block of the stream (a format constant: docs/store-format.md)."""
TILE_ROWS = 4096
"""Rows over which the fast sampler bounds each feature's firing probability (smaller: tighter bounds, more
binomial draws)."""
DENSE_ABOVE = 0.125
"""Features whose bound exceeds this fire by a dense draw over the tile (a distinct-rows draw would collide often)."""


@dataclass
class Block:
    """Sampled rows: their active (row, feature, coefficient) pairs and their activations."""

    row_P: torch.Tensor
    """Each pair's row, ascending (int64)."""
    feature_P: torch.Tensor
    """Its true feature, ascending within a row (int64)."""
    value_P: torch.Tensor
    """Its coefficient, > 0 (float32)."""
    x_BD: torch.Tensor
    """The rows, ``sum_g c_g d_g + b`` (float32)."""

    def __len__(self) -> int:
        return len(self.x_BD)

    def rows(self, start: int, stop: int) -> Block:
        lo, hi = torch.searchsorted(self.row_P, torch.tensor([start, stop], device=self.row_P.device)).tolist()
        return Block(self.row_P[lo:hi] - start, self.feature_P[lo:hi], self.value_P[lo:hi], self.x_BD[start:stop])

    @property
    def counts_B(self) -> torch.Tensor:
        """Active features per row."""
        return torch.bincount(self.row_P, minlength=len(self))

    def padded(self, slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' lists as the store keeps them, ``(B, slots)``: features ascending then -1, coefficients then 0
        (``slots``: the widest row when None; a row wider than ``slots`` raises ValueError)."""
        counts = self.counts_B
        widest = int(counts.max()) if len(counts) else 0
        S = max(widest, 1) if slots is None else slots
        if widest > S:
            raise ValueError(f"a row has {widest} active features, more than the {S} slots")
        slot = torch.arange(len(self.row_P), device=self.row_P.device) - (torch.cumsum(counts, 0) - counts)[self.row_P]
        ids = torch.full((len(self), S), NO_FEATURE, dtype=torch.int64, device=self.row_P.device)
        coefs = torch.zeros((len(self), S), dtype=torch.float32, device=self.row_P.device)
        ids[self.row_P, slot] = self.feature_P
        coefs[self.row_P, slot] = self.value_P
        return ids, coefs


class Sampler(Protocol):
    def sample(self, n: int, generator: torch.Generator) -> Block: ...


def block_seed(seed: int, block: int) -> int:
    """The generator seed of block ``block`` of the stream of ``seed`` (independent of every other block)."""
    return int.from_bytes(hashlib.sha256(f"hfg-synthetic/{seed}/{block}".encode()).digest()[:8], "little") >> 1


def make_sampler(name: str, truth: GroundTruth, device: torch.device) -> Sampler:
    if name == "fast":
        return FastSampler(truth, device)
    if name == "sae-lens":
        return SaeLensSampler(truth, device)
    raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


class FastSampler:
    """Exact sampling of the model through its active pairs (see the module docstring)."""

    def __init__(self, truth: GroundTruth, device: torch.device) -> None:
        self.device = device
        self.G, self.D = truth.n_features, truth.d_model

        def dev(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)

        self.dictionary_GD, self.bias_D = dev(truth.dictionary_GD), dev(truth.bias_D)
        self.p_G = dev(truth.probability_G).clamp(0.0, 1.0)
        self.mean_G, self.std_G = dev(truth.magnitude_mean_G), dev(truth.magnitude_std_G)
        self.correlated = truth.correlation_factor_GQ is not None
        if self.correlated:
            self.factor_GR = dev(truth.correlation_factor_GQ)
            self.diag_sqrt_G = dev(truth.correlation_diag_G).sqrt()
            # SAELens's threshold: Phi^-1(1 - p) = sqrt(2) erfinv(1 - 2p).
            self.threshold_G = math.sqrt(2) * torch.erfinv(1 - 2 * self.p_G)
        self.free = dev((truth.parent_G < 0).nonzero().flatten())
        """Features without a parent (roots and features outside every tree): drawn in every row."""
        offsets, child = truth.children
        self.child_offsets, self.child = dev(offsets), dev(child)
        self.n_children_G = dev(offsets[1:] - offsets[:-1])
        self.exclusive_G, self.scale_children_G = dev(truth.exclusive_G), dev(truth.scale_children_G)
        self.max_depth = truth.max_depth

    def _fires(self, row: torch.Tensor, feat: torch.Tensor, eps_BQ: torch.Tensor | None,
               gen: torch.Generator) -> torch.Tensor:
        """Whether each (row, feature) trial fires: Bernoulli(p), or its copula probability given the row's factor."""
        if eps_BQ is None:
            q = self.p_G[feat]
        else:
            shift = (eps_BQ[row] * self.factor_GR[feat]).sum(-1)
            q = _upper_tail((self.threshold_G[feat] - shift) / self.diag_sqrt_G[feat])
        return torch.rand(len(feat), generator=gen, device=self.device) < q

    def _coefficients(self, feat: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(len(feat), generator=gen, device=self.device)
        return (self.mean_G[feat] + self.std_G[feat] * noise).relu()

    # -- features without a parent ---------------------------------------------------------------------------
    def _fire_free(self, n: int, eps_BQ: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(row, feature) of every firing feature that has no parent."""
        rows, feats = [], []
        tile = TILE_ROWS if eps_BQ is not None else n
        for start in range(0, n, tile):
            m = min(tile, n - start)
            r, f = self._fire_tile(m, None if eps_BQ is None else eps_BQ[start : start + m], gen)
            rows.append(r + start)
            feats.append(f)
        return torch.cat(rows), torch.cat(feats)

    def _fire_tile(self, m: int, eps_MR: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        dev, free = self.device, self.free
        if eps_MR is not None:
            shift_MF = eps_MR @ self.factor_GR[free].T
            bound = _upper_tail((self.threshold_G[free] - shift_MF.amax(dim=0)) / self.diag_sqrt_G[free])
        else:
            shift_MF, bound = None, self.p_G[free]
        dense = (bound > DENSE_ABOVE).nonzero().flatten()
        sparse = (bound <= DENSE_ABOVE).nonzero().flatten()
        # Dense features: each (row, feature) fires with its exact probability.
        if shift_MF is None:
            q_MJ = self.p_G[free[dense]].expand(m, -1)
        else:
            g = free[dense]
            q_MJ = _upper_tail((self.threshold_G[g] - shift_MF[:, dense]) / self.diag_sqrt_G[g])
        r_dense, j_dense = (torch.rand(m, len(dense), generator=gen, device=dev) < q_MJ).nonzero(as_tuple=True)
        # Sparse features: candidates at the bound, thinned to the exact probability.
        counts = torch.binomial(torch.full((len(sparse),), float(m), device=dev), bound[sparse], generator=gen)
        owner, r_sparse = distinct_rows(counts.long(), m, gen)
        j_sparse = sparse[owner]
        if shift_MF is not None:
            g = free[j_sparse]
            q = _upper_tail((self.threshold_G[g] - shift_MF[r_sparse, j_sparse]) / self.diag_sqrt_G[g])
            keep = torch.rand(len(q), generator=gen, device=dev) * bound[j_sparse] < q
            r_sparse, j_sparse = r_sparse[keep], j_sparse[keep]
        return torch.cat([r_dense, r_sparse]), free[torch.cat([dense[j_dense], j_sparse])]

    # -- children, level by level ---------------------------------------------------------------------------
    def _children(self, row: torch.Tensor, parent: torch.Tensor, parent_value: torch.Tensor,
                  eps_BQ: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The active children of these active parent pairs: each child drawn only in its parent's rows (given the
        row's copula factor a child fires independently of its parent, and where its parent is off it is gated
        off), then its coefficient, one child kept per exclusive parent, and the parent's scaling."""
        counts = self.n_children_G[parent]
        pair = torch.repeat_interleave(torch.arange(len(parent), device=self.device), counts)
        within = torch.arange(len(pair), device=self.device) - (torch.cumsum(counts, 0) - counts)[pair]
        child = self.child[self.child_offsets[parent[pair]] + within]
        fired = self._fires(row[pair], child, eps_BQ, gen)
        pair, child = pair[fired], child[fired]
        value = self._coefficients(child, gen)
        on = value > 0
        pair, child, value = pair[on], child[on], value[on]
        exclusive = self.exclusive_G[parent[pair]]
        if bool(exclusive.any()):
            keep = ~exclusive | one_of_each(pair, len(parent), gen)
            pair, child, value = pair[keep], child[keep], value[keep]
        scaled = self.scale_children_G[parent[pair]]
        factor = torch.where(scaled, parent_value[pair] / self.mean_G[parent[pair]], torch.ones_like(value))
        value = value * factor
        on = value > 0
        return row[pair][on], child[on], value[on]

    # -- a block ----------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator) -> Block:
        eps_BQ = None
        if self.correlated:
            eps_BQ = torch.randn(n, self.factor_GR.shape[1], generator=generator, device=self.device)
        row, feat = self._fire_free(n, eps_BQ, generator)
        value = self._coefficients(feat, generator)
        on = value > 0
        rows, feats, values = [row[on]], [feat[on]], [value[on]]
        for _ in range(self.max_depth):
            row, feat, value = rows[-1], feats[-1], values[-1]
            has = self.n_children_G[feat] > 0
            if not bool(has.any()):
                break
            r, f, v = self._children(row[has], feat[has], value[has], eps_BQ, generator)
            rows.append(r)
            feats.append(f)
            values.append(v)
        row, feat, value = torch.cat(rows), torch.cat(feats), torch.cat(values)
        order = torch.argsort(row * self.G + feat)
        return assemble(row[order], feat[order], value[order], n, self.dictionary_GD, self.bias_D)


class SaeLensSampler:
    """SAELens's own ``ActivationGenerator`` and ``FeatureDictionary`` (dense, slower): the reference the fast
    sampler is tested against, and a choice for stores (``--sampler sae-lens``)."""

    def __init__(self, truth: GroundTruth, device: torch.device) -> None:
        from harvest.synthetic.model import to_sae_lens

        self.device = device
        self.feature_dict, self.generator = to_sae_lens(truth, device)
        self.dictionary_GD, self.bias_D = truth.dictionary_GD.to(device), truth.bias_D.to(device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> Block:
        # SAELens samples from the global generator: seed it from ours, without disturbing anyone else's.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            acts_BG = self.generator.sample(n)
        row, feat = acts_BG.nonzero(as_tuple=True)  # row-major: sorted by row, then feature
        return assemble(row, feat, acts_BG[row, feat], n, self.dictionary_GD, self.bias_D)


def one_of_each(group_P: torch.Tensor, n_groups: int, gen: torch.Generator) -> torch.Tensor:
    """Uniformly one member of each group (``group_P``: each member's group, in [0, n_groups)), as a mask: the member
    whose place in a random permutation is highest. A permutation has no ties; independent float32 uniform scores
    tied once in a million rows of synth-cpu, and both children of an exclusive parent stayed."""
    score = torch.randperm(len(group_P), generator=gen, device=group_P.device)
    best = torch.full((n_groups,), -1, device=group_P.device).scatter_reduce(0, group_P, score, "amax")
    return score == best[group_P]


def assemble(row_P: torch.Tensor, feat_P: torch.Tensor, value_P: torch.Tensor, n: int, dictionary_GD: torch.Tensor,
             bias_D: torch.Tensor) -> Block:
    """The block of these active pairs (sorted by row, then feature), its rows summed from them."""
    return Block(row_P, feat_P, value_P.float(), pair_rows(row_P, feat_P, value_P, n, dictionary_GD, bias_D))


def distinct_rows(counts_J: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each j, ``counts_J[j]`` distinct rows of ``range(n)``, uniformly: draws with replacement, then draws
    again every copy after the first of a repeated (j, row) until none is repeated. Which copies are drawn again
    depends only on where the repeats are, never on the rows' labels, so every subset of a given size is equally
    likely. Returns (j, row) per draw."""
    device = counts_J.device
    owner = torch.repeat_interleave(torch.arange(len(counts_J), device=device), counts_J)
    rows = torch.randint(0, n, (len(owner),), generator=gen, device=device)
    while len(owner):
        key, order = torch.sort(owner * n + rows, stable=True)
        repeat = key[1:] == key[:-1]
        if not bool(repeat.any()):
            break
        again = order[1:][repeat]
        rows[again] = torch.randint(0, n, (len(again),), generator=gen, device=device)
    return owner, rows


def _upper_tail(z: torch.Tensor) -> torch.Tensor:
    """P(N(0, 1) > z)."""
    return 0.5 * torch.erfc(z / math.sqrt(2))


class Stream:
    """The rows of the stream of ``seed``: block j sampled from a generator seeded by (seed, j) alone."""

    def __init__(self, sampler: Sampler, seed: int, device: torch.device) -> None:
        self.sampler, self.seed, self.device = sampler, seed, device
        self._cached: tuple[int, Block] | None = None

    def block(self, j: int) -> Block:
        if self._cached is not None and self._cached[0] == j:
            return self._cached[1]
        gen = torch.Generator(device=self.device).manual_seed(block_seed(self.seed, j))
        block = self.sampler.sample(BLOCK_ROWS, gen)
        self._cached = (j, block)
        return block

    def rows(self, start: int, stop: int) -> Block:
        """Rows [start, stop) of the stream."""
        parts, offset = [], 0
        for j in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
            lo, hi = max(start, j * BLOCK_ROWS), min(stop, (j + 1) * BLOCK_ROWS)
            part = self.block(j).rows(lo - j * BLOCK_ROWS, hi - j * BLOCK_ROWS)
            parts.append(Block(part.row_P + offset, part.feature_P, part.value_P, part.x_BD))
            offset += hi - lo
        if len(parts) == 1:
            return parts[0]
        return Block(*(torch.cat([getattr(p, f) for p in parts]) for f in ("row_P", "feature_P", "value_P", "x_BD")))
