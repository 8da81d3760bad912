"""The ground truth a synthetic store holds: the generative model its rows were sampled from, and each row's active
features.

A synthetic store's rows are ``x = sum_g c_g d_g + b``: a sparse, non-negative coefficient ``c_g`` for each true
feature g, its unit-norm direction ``d_g`` (the *dictionary*) and a bias ``b``. The features fire with known
probabilities (optionally correlated through a low-rank Gaussian copula), with known magnitude distributions, and
form a forest: a child fires only where its parent does, and the children of an *exclusive* parent exclude each
other. That is the model of SAELens's ``sae_lens.synthetic`` (SynthSAEBench), held here as plain tensors so that
every stage reads it without SAELens.

Shapes: G true features, D = d_model, Q the correlation's rank, S the slots of a row's list of active features
(padded), B rows. docs/store-format.md specifies the arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import torch

from store.errors import CorruptStoreError

GROUP = "truth"
"""The group of a synthetic store that holds its ground truth."""
ROW_FEATURES = f"{GROUP}/row_features"
"""(n_rows, S) int32: each row's active true features, ascending, padded with -1."""
ROW_COEFFICIENTS = f"{GROUP}/row_coefficients"
"""(n_rows, S) float32: their coefficients (> 0), padded with 0."""
NO_FEATURE = -1


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The generative model of a synthetic store (every tensor on the CPU, float32 or int64)."""

    dictionary_GD: torch.Tensor
    """Each true feature's direction in activation space (unit norm)."""
    bias_D: torch.Tensor
    """Added to every row."""
    probability_G: torch.Tensor
    """Each feature's firing probability as sampled, before its parent gates it (SAELens's, after its hierarchy
    compensation)."""
    magnitude_mean_G: torch.Tensor
    """Mean coefficient of a feature where it fires, before the ReLU."""
    magnitude_std_G: torch.Tensor
    """Its standard deviation (coefficients are ReLU(mean + std * N(0, 1)))."""
    parent_G: torch.Tensor
    """The feature's parent, -1 for a root or a feature outside every tree."""
    depth_G: torch.Tensor
    """0 for a root, 1 for its children, ...; -1 for a feature outside every tree."""
    exclusive_G: torch.Tensor
    """Whether the feature's children exclude each other (at most one fires in a row)."""
    scale_children_G: torch.Tensor
    """Whether the feature's children are scaled by its coefficient over its mean (else only gated by it)."""
    correlation_factor_GQ: torch.Tensor | None = None
    """Low-rank factor F of the firing copula's correlation F F^T + diag; None when features fire independently."""
    correlation_diag_G: torch.Tensor | None = None
    """Its diagonal term (1 - |F_g|^2)."""

    def __post_init__(self) -> None:
        G, D = self.dictionary_GD.shape
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None and f.name.endswith("_G") and t.shape != (G,):
                raise CorruptStoreError(f"ground truth: {f.name} has shape {tuple(t.shape)}, expected ({G},)")
        if self.bias_D.shape != (D,):
            raise CorruptStoreError(f"ground truth: the bias has shape {tuple(self.bias_D.shape)}, expected ({D},)")
        if (self.correlation_factor_GQ is None) != (self.correlation_diag_G is None):
            raise CorruptStoreError("ground truth: the correlation needs both its factor and its diagonal")
        parent = self.parent_G
        bad = (parent < -1) | (parent >= G) | (parent == torch.arange(G))
        if bool(bad.any()):
            raise CorruptStoreError(f"ground truth: feature {int(bad.nonzero()[0, 0])} has an invalid parent")
        has_parent = parent >= 0
        if bool((self.depth_G[has_parent] != self.depth_G[parent[has_parent]] + 1).any()):
            raise CorruptStoreError("ground truth: depths do not follow the parents (a child is one deeper)")

    @property
    def n_features(self) -> int:
        return self.dictionary_GD.shape[0]

    @property
    def d_model(self) -> int:
        return self.dictionary_GD.shape[1]

    @property
    def rank(self) -> int:
        return 0 if self.correlation_factor_GQ is None else self.correlation_factor_GQ.shape[1]

    @property
    def max_depth(self) -> int:
        return int(self.depth_G.max()) if self.n_features else -1

    @cached_property
    def children(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets (G + 1,), children): the children of g are ``children[offsets[g]:offsets[g + 1]]``, ascending."""
        child = (self.parent_G >= 0).nonzero().flatten()
        order = torch.argsort(self.parent_G[child] * self.n_features + child)
        child = child[order]
        counts = torch.bincount(self.parent_G[child], minlength=self.n_features)
        offsets = torch.zeros(self.n_features + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        return offsets, child

    def children_of(self, g: int) -> list[int]:
        offsets, child = self.children
        return child[offsets[g] : offsets[g + 1]].tolist()

    @property
    def parents_with_children(self) -> torch.Tensor:
        """The features that have children, ascending."""
        offsets, _ = self.children
        return ((offsets[1:] - offsets[:-1]) > 0).nonzero().flatten()

    def arrays(self) -> dict[str, np.ndarray]:
        """Array name (under ``truth/``) -> its contents, as the store holds them (docs/store-format.md)."""
        offsets, child = self.children
        out = {
            "dictionary": self.dictionary_GD, "bias": self.bias_D, "probability": self.probability_G,
            "magnitude_mean": self.magnitude_mean_G, "magnitude_std": self.magnitude_std_G,
            "parent": self.parent_G, "depth": self.depth_G, "exclusive": self.exclusive_G,
            "scale_children": self.scale_children_G, "children_offsets": offsets, "children": child,
        }
        if self.correlation_factor_GQ is not None:
            out |= {"correlation_factor": self.correlation_factor_GQ, "correlation_diag": self.correlation_diag_G}
        return {name: _stored(name, t) for name, t in out.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str) -> GroundTruth:
        """The record of arrays read back (``arrays()``'s names); a missing one is one CorruptStoreError line."""
        need = ("dictionary", "bias", "probability", "magnitude_mean", "magnitude_std", "parent", "depth",
                "exclusive", "scale_children")
        missing = [n for n in need if n not in arrays]
        if missing:
            raise CorruptStoreError(f"{where}: the ground truth lacks {GROUP}/{missing[0]}: the store is damaged; "
                                    "synthesize it again")
        t = {name: torch.from_numpy(np.asarray(a)) for name, a in arrays.items()}
        truth = cls(
            dictionary_GD=t["dictionary"].float(), bias_D=t["bias"].float(), probability_G=t["probability"].float(),
            magnitude_mean_G=t["magnitude_mean"].float(), magnitude_std_G=t["magnitude_std"].float(),
            parent_G=t["parent"].long(), depth_G=t["depth"].long(), exclusive_G=t["exclusive"].bool(),
            scale_children_G=t["scale_children"].bool(),
            correlation_factor_GQ=t["correlation_factor"].float() if "correlation_factor" in t else None,
            correlation_diag_G=t["correlation_diag"].float() if "correlation_diag" in t else None,
        )
        if "children" in t and not (torch.equal(truth.children[1], t["children"].long())
                                    and torch.equal(truth.children[0], t["children_offsets"].long())):
            raise CorruptStoreError(f"{where}: {GROUP}/children disagrees with {GROUP}/parent: the store is damaged")
        return truth

    def digest(self) -> str:
        """``sha256:<hex>`` over every array's bytes: the model's identity by content."""
        h = hashlib.sha256()
        for name, a in sorted(self.arrays().items()):
            h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return "sha256:" + h.hexdigest()


STORED_DTYPES = {"parent": np.int32, "depth": np.int16, "exclusive": np.uint8, "scale_children": np.uint8,
                 "children_offsets": np.int64, "children": np.int32}
"""How the integer and boolean arrays are stored; every other array is float32."""


def _stored(name: str, t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(STORED_DTYPES.get(name, np.float32)))


def dense_rows(ids_BS: np.ndarray | torch.Tensor, coefs_BS: np.ndarray | torch.Tensor, n_features: int,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The padded per-row lists as dense coefficients ``(B, G)``, made on ``device`` (only the lists cross to it)."""
    ids = torch.as_tensor(ids_BS, device=device).long()
    coefs = torch.as_tensor(coefs_BS, device=device).float()
    out = torch.zeros(ids.shape[0], n_features + 1, dtype=torch.float32, device=ids.device)
    out.scatter_(1, torch.where(ids >= 0, ids, n_features), coefs)  # padding lands in the extra column
    return out[:, :n_features]


def pair_rows(row_P: torch.Tensor, feature_P: torch.Tensor, value_P: torch.Tensor, n: int,
              dictionary_GD: torch.Tensor, bias_D: torch.Tensor) -> torch.Tensor:
    """The rows of these active pairs (sorted by row, then feature): ``x_b = sum c_g d_g + b``, each row summed in
    its pairs' order (on the CPU an in-order ``index_add``, the same floats on every run; on CUDA, whose
    ``index_add`` sums in any order, a padded batched matmul)."""
    dev = dictionary_GD.device
    if dev.type == "cpu":
        out = torch.zeros(n, dictionary_GD.shape[1], dtype=torch.float32)
        out.index_add_(0, row_P, dictionary_GD[feature_P] * value_P.float()[:, None])
        return out + bias_D
    counts = torch.bincount(row_P, minlength=n)
    S = max(int(counts.max()) if n else 0, 1)
    slot = torch.arange(len(row_P), device=dev) - (torch.cumsum(counts, 0) - counts)[row_P]
    ids = torch.zeros((n, S), dtype=torch.int64, device=dev)
    coefs = torch.zeros((n, S), dtype=torch.float32, device=dev)
    ids[row_P, slot], coefs[row_P, slot] = feature_P, value_P.float()
    out = torch.empty(n, dictionary_GD.shape[1], dtype=torch.float32, device=dev)
    for a in range(0, n, 1024):
        out[a : a + 1024] = torch.bmm(coefs[a : a + 1024, None], dictionary_GD[ids[a : a + 1024]])[:, 0] + bias_D
    return out


def rows_of(ids_BS: np.ndarray | torch.Tensor, coefs_BS: np.ndarray | torch.Tensor, dictionary_GD: torch.Tensor,
            bias_D: torch.Tensor) -> torch.Tensor:
    """The rows of these padded lists (a store's), summed as :func:`pair_rows` sums them."""
    ids = torch.as_tensor(ids_BS).long().to(dictionary_GD.device)
    coefs = torch.as_tensor(coefs_BS).float().to(dictionary_GD.device)
    real = ids >= 0
    row = real.nonzero()[:, 0]
    return pair_rows(row, ids[real], coefs[real], len(ids), dictionary_GD, bias_D)


def list_problems(ids_BS: np.ndarray, coefs_BS: np.ndarray, truth: GroundTruth) -> list[str]:
    """What is wrong with these rows' lists of active features, as phrases (empty when nothing is): ids outside the
    model or out of order, padding inside a list, non-positive coefficients, a child without its parent, two
    children of an exclusive parent."""
    ids = torch.as_tensor(ids_BS).long()
    coefs = torch.as_tensor(coefs_BS).float()
    G = truth.n_features
    real = ids >= 0
    problems = []
    if bool((ids >= G).any() | (ids < NO_FEATURE).any()):
        problems.append("feature ids outside the model")
    if bool((real[:, 1:] & ~real[:, :-1]).any()):
        problems.append("padding inside a row's list")
    if bool(((ids[:, 1:] <= ids[:, :-1]) & real[:, 1:]).any()):
        problems.append("features out of ascending order")
    if bool((coefs[real] <= 0).any() | (coefs[~real] != 0).any()):
        problems.append("non-positive coefficients (or non-zero padding)")
    if problems:
        return problems
    row = real.nonzero()[:, 0]
    feat = ids[real]
    key = row * G + feat  # ascending: rows in order, each row's features ascending
    parent = truth.parent_G[feat]
    child = parent >= 0
    parent_key = row[child] * G + parent[child]
    pos = torch.searchsorted(key, parent_key).clamp(max=max(len(key) - 1, 0))
    if len(parent_key) and not bool((key[pos] == parent_key).all()):
        problems.append("a child active without its parent")
    siblings = parent_key[truth.exclusive_G[parent[child]]].sort().values
    if bool((siblings[1:] == siblings[:-1]).any()):
        problems.append("two children of an exclusive parent active together")
    return problems
