"""Sparse latents as (value, index) pairs, and an encoder backward and a decoder that touch only the active pairs.

A sparse SAE's latents ``z (…, B, F)`` have few non-zeros per row (k of a TopK SAE, the L0 of a ReLU-L1 SAE), so
most of a dense step multiplies zeros: the decoder forward ``z @ W_dec``, the decoder-weight gradient
``z^T @ dx_hat``, the latent gradient ``dx_hat @ W_dec^T`` and the encoder-weight gradient ``x^T @ dpre``. Here
the latents are :class:`Pairs` (``vals (…, B, K)``, ``idx (…, B, K)``: K active slots per row) and those four
products cost ``B * K * D`` instead of ``B * F * D``. The encoder forward ``pre = x @ W_enc + b_enc`` stays dense
(every latent's pre-activation is needed to choose the active ones).

Shapes: an optional member dimension M first (a stack of SAEs, :mod:`fit.stack`), B rows, D = d_model,
F latents, K active slots per row. As in :mod:`fit.functional`, a single SAE is ``x (B, D)``, ``W_enc (D, F)``,
``b_enc (F,)``, ``W_dec (F, D)``, ``b_dec (D,)``; a stack is ``x (1 or M, B, D)``, ``W_enc (M, D, F)``,
``b_enc (M, 1, F)``, ``W_dec (M, F, D)``, ``b_dec (M, 1, D)``, and its pairs are ``(M, B, K)``.

How an architecture uses it (the training step of a TopK SAE, members first or not)::

    pairs = sparse.encode_pairs(x_n, W_enc, b_enc, lambda pre: sparse.topk_pairs(pre, k))
    x_hat = sparse.decode_pairs(pairs, W_dec, b_dec)
    loss = fn.squared_error(x_n, x_hat).mean(-1)          # backward: only the active pairs
    z = sparse.dense(pairs, F)                              # only for metrics / evaluation (no grad needed)

- ``select(pre) -> Pairs`` chooses the active pairs from the dense pre-activations (no gradient flows through
  the choice): :func:`topk_pairs`, :func:`batch_topk_pairs`, :func:`relu_pairs`, :func:`threshold_pairs`, or
  your own. It may return a tuple of Pairs (e.g. the main latents and AuxK's dead-latent latents, chosen from the
  same ``pre``): :func:`encode_pairs` then returns a tuple too, and the encoder backward sums both.
- The selection contract: a slot's value is ``pre`` at its index where that is > 0 and the slot is chosen, else
  exactly 0 (padding slots: value 0, index any valid latent, here 0). The gradient of a slot's value with
  respect to ``pre`` is 1 where its value is non-zero and 0 elsewhere: the latents are ReLU(pre) on the chosen
  set, as TopK (Gao et al. 2024), BatchTopK and ReLU SAEs define them.
- Indices within a row are distinct in every selection here (a duplicate would add its values, consistently in
  decode, the gradients and :func:`dense`).
- A ReLU-L1 SAE's penalty on pairs is :func:`weighted_l1` (the same value as ``fn.relu_penalty`` on dense z).
- Matryoshka prefixes: :func:`prefix` keeps the pairs with index < stop (decode it for the prefix's x_hat).
- When to use the pairs for a ReLU-L1 SAE: when its measured L0 / F is below :data:`RELU_DENSITY_THRESHOLD`
  (measured by benchmarks/sparse_bench.py); TopK-family SAEs always.

The kernels (chosen by measurement on the 2-core CPU, docs/fit.md "Sparse kernels"): the decoder forward is
``embedding_bag`` with per-sample weights (0.27 s against 0.42 s for a CSR ``sparse.mm`` and 3.7 s for a gather
and ``bmm`` at B=2048, D=2304, F=9216, K=64); its backward is embedding_bag's own (the weights' gradient as dot
products, the table's as one sorted accumulation), and the encoder-weight gradient calls that same accumulation
kernel directly (``_embedding_bag_dense_backward``: 0.77 s against 0.82 s for a COO ``sparse.mm``, 0.90 s for a
presorted CSR one and 4.6 s for ``index_add_``). On a GPU the same calls run (CUDA's embedding_bag kernels); no
Triton kernel, none having been measured.

Selections with a variable count per row (:func:`batch_topk_pairs`, :func:`relu_pairs`,
:func:`threshold_pairs`) pad every row to the batch's largest count, which costs one host synchronisation on
CUDA (the size of the result); :func:`topk_pairs` has a fixed K and none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F_

RELU_DENSITY_THRESHOLD = 0.05
"""L0 / F below which the pair step is faster than the dense step for a ReLU-L1 SAE. Measured on the 2-core CPU
(benchmarks/sparse_bench.py, docs/fit.md "Sparse kernels"), the two cross at L0 / F = 0.073 (d = n = 2304) and
0.085 (d = n = 640) with one torch thread (the pair step 1.3x the dense one at 0.05 at both sizes); with two threads
on the machine loaded by other work, at 0.041 (d = n = 2304) and 0.011 (d = n = 640, noisy). A GPU never switches:
:func:`relu_density_threshold`."""


def relu_density_threshold(device: torch.device) -> float:
    """:data:`RELU_DENSITY_THRESHOLD` where it was measured to pay (the CPU); 0 (never switch) on a GPU, where on an
    H200 (2026-11-26, d = n = 2304, batch 2048, float32; docs/gpu.md) the pair step ran at 0.17x to 0.74x the dense
    step at every L0 / F tried from 0.005 to 0.2: the dense matmuls there are too fast for gathers to beat."""
    return RELU_DENSITY_THRESHOLD if device.type == "cpu" else 0.0


class Pairs(NamedTuple):
    """Active latents as K (value, index) slots per row: ``vals (…, B, K)`` float, ``idx (…, B, K)`` int64."""

    vals: torch.Tensor
    idx: torch.Tensor


Select = Callable[[torch.Tensor], "Pairs | tuple[Pairs, ...]"]


# --- selections (from dense pre-activations; no gradient flows through the choice) -------------------------------


def topk_pairs(pre: torch.Tensor, k: int) -> Pairs:
    """The k largest pre-activations of each row, ReLU'd (a chosen slot whose pre-activation is <= 0 is 0)."""
    vals, idx = torch.topk(pre, k, dim=-1, sorted=False)
    return Pairs(vals.clamp_min(0), idx)


def batch_topk_pairs(pre: torch.Tensor, k: int) -> Pairs:
    """The k * B largest pre-activations over each member's whole batch (BatchTopK), ReLU'd; rows get variable
    counts, padded to the batch's largest."""
    B, F = pre.shape[-2:]
    flat = pre.reshape(*pre.shape[:-2], B * F)
    top = torch.topk(flat, min(k * B, B * F), dim=-1, sorted=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, top, True).view(pre.shape)
    return _pairs_from_mask(pre, mask & (pre > 0))


def relu_pairs(pre: torch.Tensor) -> Pairs:
    """Every positive pre-activation (a ReLU SAE's latents); rows padded to the batch's largest count."""
    return _pairs_from_mask(pre, pre > 0)


def threshold_pairs(pre: torch.Tensor, theta: torch.Tensor | float) -> Pairs:
    """Pre-activations above ``theta`` (and above 0), e.g. BatchTopK's inference threshold; ``theta`` a scalar or
    anything broadcasting against ``pre`` (per member ``(M, 1, 1)``, per latent ``(…, 1, F)``)."""
    return _pairs_from_mask(pre, (pre > theta) & (pre > 0))


def _pairs_from_mask(pre: torch.Tensor, mask: torch.Tensor) -> Pairs:
    """The masked entries of each row as pairs, in index order, padded (value 0, index 0) to the largest count."""
    lead, F = pre.shape[:-1], pre.shape[-1]
    mask_R = mask.reshape(-1, F)
    counts = mask_R.sum(-1)
    K = int(counts.max()) if counts.numel() else 0
    K = max(K, 1)  # at least one slot, so every shape downstream is non-empty
    row, col = mask_R.nonzero(as_tuple=True)
    # Slot of each entry within its row: its rank among the row's entries (nonzero is row-major).
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(row.numel(), device=pre.device) - starts[row]
    idx = torch.zeros(mask_R.shape[0], K, dtype=torch.int64, device=pre.device)
    vals = torch.zeros(mask_R.shape[0], K, dtype=pre.dtype, device=pre.device)
    idx[row, slot] = col
    vals[row, slot] = pre.reshape(-1, F)[row, col]
    return Pairs(vals.view(*lead, K), idx.view(*lead, K))


# --- shape helpers ------------------------------------------------------------------------------------------------


def _members(t: torch.Tensor, single_dims: int) -> torch.Tensor:
    """``t`` with a member dimension first (added when it has only the single-SAE dims)."""
    return t.unsqueeze(0) if t.dim() == single_dims else t


# --- the kernels: the three products over the active pairs -------------------------------------------------------


class _Bags(NamedTuple):
    """Slots as embedding_bag takes them: row r's slots are ``idx/w[offsets[r] : offsets[r] + counts[r]]``."""

    idx: torch.Tensor
    """(N,) table rows."""
    w: torch.Tensor
    """(N,) weights."""
    offsets: torch.Tensor
    """(R,) where each row's slots start."""
    bag: torch.Tensor
    """(N,) each slot's row."""
    counts: torch.Tensor
    """(R,) slots per row."""


COMPACT_BELOW = 0.8
"""Drop a batch's zero-valued (padding) slots before the kernels when fewer than this fraction of its slots are
active (ReLU and BatchTopK rows padded to the batch's largest count; about 0.65 at a ReLU L0 of 64 of 2304). CPU only:
counting the active slots reads a value back, which a GPU step must not do."""


def _bags(idx_RK: torch.Tensor, w_RK: torch.Tensor, active_RK: torch.Tensor) -> _Bags:
    """The slots of R rows of K, without the inactive ones where that pays (:data:`COMPACT_BELOW`)."""
    R, K = idx_RK.shape
    dev = idx_RK.device
    if dev.type == "cpu" and K > 1 and int(active_RK.sum()) < COMPACT_BELOW * R * K:
        counts = active_RK.sum(-1)
        offsets = torch.cumsum(counts, 0) - counts
        bag = torch.repeat_interleave(torch.arange(R, device=dev), counts)
        return _Bags(idx_RK[active_RK], w_RK[active_RK], offsets, bag, counts)
    counts = torch.full((R,), K, dtype=torch.int64, device=dev)
    return _Bags(idx_RK.reshape(-1), w_RK.reshape(-1), torch.arange(0, R * K, K, device=dev),
                 torch.arange(R, device=dev).repeat_interleave(K), counts)


def _gather_sum(bags: _Bags, table_TD: torch.Tensor) -> torch.Tensor:
    """``out[r] = sum over row r's slots of w * table[idx]`` (R, D); differentiable in ``w`` and ``table``
    (embedding_bag's backward: the weights' gradient are dot products, the table's a :func:`_scatter_sum`)."""
    return F_.embedding_bag(bags.idx, table_TD, bags.offsets, per_sample_weights=bags.w, mode="sum")


def _scatter_sum(bags: _Bags, y_RD: torch.Tensor, rows: int) -> torch.Tensor:
    """``out[t] = sum over slots with idx == t of w * y[their row]`` (rows, D): the transpose of
    :func:`_gather_sum`, i.e. ``S^T @ y`` for the sparse ``S (R, rows)`` the slots describe."""
    # embedding_bag's weight gradient is exactly this sum; calling it directly skips the forward that autograd
    # would need to reach it.
    return torch.ops.aten._embedding_bag_dense_backward(
        y_RD.contiguous(), bags.idx, bags.bag, bags.counts, bags.counts.new_empty(0), rows, False, 0, bags.w)


def _flat_idx(idx_MBK: torch.Tensor, F: int) -> torch.Tensor:
    """Member m's latent f as row m * F + f of the members' stacked tables."""
    M = idx_MBK.shape[0]
    offsets = torch.arange(M, device=idx_MBK.device).mul_(F).view(M, 1, 1)
    return (idx_MBK + offsets).reshape(-1, idx_MBK.shape[-1])


# --- encoder: dense forward, backward over the active pairs ------------------------------------------------------


def _pre_activations(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor) -> torch.Tensor:
    """``x @ W_enc + b_enc`` with the bias added inside the matmul (one pass over the ``(…, B, F)`` result)."""
    if x.dim() == 2 and W_enc.dim() == 2:
        return torch.addmm(b_enc, x, W_enc)
    if x.dim() == 3 and W_enc.dim() == 3 and b_enc.dim() == 3:
        M = W_enc.shape[0]
        return torch.baddbmm(b_enc, x.expand(M, *x.shape[1:]), W_enc)
    return torch.matmul(x, W_enc) + b_enc


def _cat_slots(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class _EncodePairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, select):  # type: ignore[override]
        if ctx.needs_input_grad[0]:
            raise ValueError("encode_pairs: x_n must not need a gradient (it is data); detach it")
        pre = _pre_activations(x, W_enc, b_enc)
        chosen = select(pre)
        ctx.single = isinstance(chosen, Pairs)
        chosen = (chosen,) if ctx.single else tuple(chosen)
        outs = []
        for p in chosen:
            outs += [p.vals, p.idx]
        ctx.mark_non_differentiable(*outs[1::2])
        ctx.save_for_backward(x, W_enc, b_enc, *outs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, W_enc, b_enc, *outs = ctx.saved_tensors
        # Under bf16 autocast the values (and so their gradients) are bf16; the kernels want the weights' dtype.
        grads = tuple(g if g is None else g.to(W_enc.dtype) for g in grads)
        single_w = W_enc.dim() == 2
        W_MDF = _members(W_enc, 2)
        M, D, F = W_MDF.shape
        # Every selection's slots side by side: the encoder's gradient is the sum over all of them.
        vals, idx, g = (_cat_slots([_members(t, 2) for t in ts]) for ts in (outs[0::2], outs[1::2], grads[0::2]))
        g = torch.where(vals != 0, g, torch.zeros((), dtype=g.dtype, device=g.device))  # d vals / d pre
        x_MBD = _members(x, 2)
        B, K = g.shape[-2:]
        dW = db = None
        bags = _bags(_flat_idx(idx.expand(M, B, K), F), g.reshape(M * B, K), (vals != 0).expand(M, B, K).reshape(
            M * B, K))
        if ctx.needs_input_grad[1]:
            x_rows = x_MBD.expand(M, B, D).reshape(M * B, D)
            # The kernel gives dW_enc^T (latents first, as the decoder's table); W_enc is (D, F), so this transpose
            # is a copy (AccumulateGrad's), the price of SAELens's encoder layout.
            dW = _scatter_sum(bags, x_rows, M * F).view(M, F, D).transpose(-1, -2)
            dW = dW[0] if single_w else dW
        if ctx.needs_input_grad[2]:
            db = torch.zeros(M * F, dtype=g.dtype, device=g.device)
            db.index_add_(0, bags.idx, bags.w)
            db = db.view(M, 1, F).sum_to_size(b_enc.shape) if b_enc.dim() != 1 else db.view(M, F).sum(0)
        return None, dW, db, None


def encode_pairs(x_n: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                 select: Select) -> Pairs | tuple[Pairs, ...]:
    """The active latents of the normalised rows: ``select(x_n @ W_enc + b_enc)``, whose backward computes the
    gradients of ``W_enc`` and ``b_enc`` from the active pairs only (``x_n`` gets none: it is data)."""
    outs = _EncodePairs.apply(x_n, W_enc, b_enc, select)
    pairs = tuple(Pairs(outs[i], outs[i + 1]) for i in range(0, len(outs), 2))
    return pairs[0] if len(pairs) == 1 else pairs


# --- decoder ------------------------------------------------------------------------------------------------------


def decode_pairs(pairs: Pairs, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """``x_hat (…, B, D) = sum_k vals * W_dec[idx] + b_dec``; its backward computes the gradients of ``vals`` and
    ``W_dec`` (and ``b_dec``) from the active pairs only. A slot whose value is 0 is padding: it adds nothing, and
    the gradient its value gets is unspecified (0 where padding is dropped; :func:`encode_pairs` passes none of it
    to the encoder either way)."""
    W_MFD = _members(W_dec, 2)
    M, F, D = W_MFD.shape
    # Under bf16 autocast the encoder's values are bf16; embedding_bag wants them in the table's dtype.
    vals, idx = _members(pairs.vals.to(W_MFD.dtype), 2), _members(pairs.idx, 2)
    Mp, B, K = vals.shape
    if Mp != M:
        vals, idx = vals.expand(M, B, K), idx.expand(M, B, K)
    bags = _bags(_flat_idx(idx, F), vals.reshape(M * B, K), vals.detach().reshape(M * B, K) != 0)
    out = _gather_sum(bags, W_MFD.reshape(M * F, D)).view(M, B, D)
    out = out[0] if pairs.vals.dim() == 2 and W_dec.dim() == 2 else out
    return out + b_dec


# --- views --------------------------------------------------------------------------------------------------------


def dense(pairs: Pairs, F: int) -> torch.Tensor:
    """The latents as a dense ``z (…, B, F)`` (differentiable in ``vals``), for metrics and references."""
    z = pairs.vals.new_zeros(*pairs.vals.shape[:-1], F)
    return z.scatter_add(-1, pairs.idx, pairs.vals)


def l0(pairs: Pairs) -> torch.Tensor:
    """Active latents per row ``(…, B)`` (float)."""
    return (pairs.vals != 0).sum(-1).to(pairs.vals.dtype)


def weighted_l1(pairs: Pairs, w_F: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``sum_j w_j |z_j|``, ``w_F`` ``(F,)`` or per member ``(M, F)``: ``fn.relu_penalty`` on
    pairs."""
    w = w_F.unsqueeze(-2).expand(*pairs.idx.shape[:-1], w_F.shape[-1]).gather(-1, pairs.idx)
    return (pairs.vals.abs() * w).sum(-1).mean(-1)


def prefix(pairs: Pairs, stop: int) -> Pairs:
    """The pairs of latents ``[0, stop)`` (a Matryoshka prefix): the others' values set to 0."""
    keep = pairs.idx < stop
    return Pairs(torch.where(keep, pairs.vals, torch.zeros((), dtype=pairs.vals.dtype,
                                                          device=pairs.vals.device)), pairs.idx)
