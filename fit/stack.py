"""M SAEs of one shape as one batched computation: stacked weights, one encoder matmul, one decoder matmul.

SAEs of one shape (d_model, n_latents, architecture key: the architecture with its stack-wide settings such as k) may
differ in everything else: penalty weights (baseline and hier), seed, normalisation and reconstruction loss. Their
parameters are stacked along a leading member dimension M (``W_enc (M, D, F)``, ``b_enc (M, F)``,
``W_dec (M, F, D)``, ``b_dec (M, D)``, the architecture's buffers likewise), so a training step is a few batched matmuls
(``torch.matmul`` over the member dimension) instead of M Python-level steps, and AdamW, being elementwise, steps the
stack exactly as it would step each SAE. Member m's slices are exactly the tensors of an :class:`fit.sae.SAE`
(:meth:`SAEStack.member_state`), which is what run directories and checkpoints hold, one SAE per file as before.

The stack is generic over the architecture (:mod:`fit.architectures`): the architecture's ``loss`` computes the
members' training losses from the stacked tensors (members first), so the architecture, not the stack, says what is
minimised; the stack gives it the normalised batch and each member's reconstruction-loss kind.
"""

from __future__ import annotations

import torch
from torch import nn

from fit import functional as fn
from fit.architectures import Batch
from fit.sae import SAE, Normalised, normalise

MEMBER_PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")
"""The stacked parameters, in the order an SAE's optimiser holds them (so per-SAE optimiser states stay valid)."""
NORM_BUFFERS = ("norm_mean", "norm_std")
"""An SAE's ``store_stats`` buffers: the store's statistics, the same for every member that uses them."""

SharedNorms = dict[str, Normalised]
"""One step's batch normalised once per normalisation, shared by every stack of the pass."""


class SAEStack(nn.Module):
    def __init__(self, saes: list[SAE]) -> None:
        super().__init__()
        first = saes[0]
        shapes = {(s.d_model, s.n_latents, s.arch.key) for s in saes}
        if len(shapes) != 1:
            raise ValueError(f"a stack holds SAEs of one shape and architecture, got {sorted(shapes)}")
        self.cfgs = [s.cfg for s in saes]
        self.arch = first.arch
        self.d_model, self.n_latents = first.d_model, first.n_latents
        for name in MEMBER_PARAMS:
            setattr(self, name, nn.Parameter(torch.stack([getattr(s, name).detach() for s in saes])))
        self.member_buffers = first.arch_buffers
        self.sparse_mode = "auto"
        """``TrainConfig.sparse``: ``auto``, ``on`` (always through active pairs) or ``off`` (always dense)."""
        self.sparse = False
        """Under ``auto``, whether a stack of dense-by-construction latents (ReLU-L1) has become sparse enough to step
        through pairs (decided from its measured L0 at log lines, :mod:`fit.trainee`; checkpointed)."""
        for name in self.member_buffers:
            self.register_buffer(name, torch.stack([getattr(s, name) for s in saes]))
        with_stats = [s for s in saes if s.cfg.norm == "store_stats"]
        if with_stats:
            for name in NORM_BUFFERS:
                self.register_buffer(name, getattr(with_stats[0], name).clone())
        self.norms = [c.norm for c in self.cfgs]
        self._recon_kinds = sorted({c.recon for c in self.cfgs})
        if len(self._recon_kinds) > 1:
            # Members of each kind are gathered, reduced, and put back in member order (never a sqrt of an mse
            # member's error, whose gradient could be 0 * inf).
            for kind in self._recon_kinds:
                idx = [m for m, c in enumerate(self.cfgs) if c.recon == kind]
                self.register_buffer(f"recon_{kind}", torch.tensor(idx), persistent=False)
            order = torch.cat([getattr(self, f"recon_{kind}") for kind in self._recon_kinds])
            self.register_buffer("recon_order", torch.argsort(order), persistent=False)

    @property
    def uses_pairs(self) -> bool:
        """Whether this step computes through the active (row, latent) pairs (:mod:`fit.sparse`)."""
        if self.sparse_mode != "auto":
            return self.sparse_mode == "on"
        return self.arch.sparse_latents or self.sparse

    def __len__(self) -> int:
        return len(self.cfgs)

    def inputs(self, x_BD: torch.Tensor, norms: SharedNorms) -> torch.Tensor:
        """Every member's normalised rows: ``(1, B, D)`` when they share one normalisation (broadcast over the
        members), else ``(M, B, D)``."""
        for norm in dict.fromkeys(self.norms):
            if norm not in norms:
                stats = (self.norm_mean, self.norm_std) if norm == "store_stats" else (None, None)
                norms[norm] = normalise(x_BD, norm, *stats)
        if len(set(self.norms)) == 1:
            return norms[self.norms[0]].x_BD.unsqueeze(0)
        return torch.stack([norms[norm].x_BD for norm in self.norms])

    def forward(self, x_n: torch.Tensor, l1_scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each member's training loss ``(M,)`` on its normalised rows ``x_n`` (from :meth:`inputs`), and its parts:
        latents ``z`` (dense ``(M, B, F)`` or pairs), squared errors per row ``sq (M, B)``, and the loss terms the
        architecture logs, each ``(M,)`` (``recon`` and ``penalty`` always). Architectures with training state
        (BatchTopK's threshold, AuxK's counters) update their buffers here."""
        buffers = {name: getattr(self, name) for name in self.member_buffers}
        out = self.arch.loss(Batch(x_n, self.W_enc, self.b_enc.unsqueeze(1), self.W_dec, self.b_dec.unsqueeze(1),
                                   buffers, self._reconstruction, l1_scale, self.uses_pairs))
        return out.loss, {"z": out.z, "sq": out.sq, **out.terms}

    def _reconstruction(self, sq_MB: torch.Tensor) -> torch.Tensor:
        if len(self._recon_kinds) == 1:
            return fn.reconstruction_loss(sq_MB, self._recon_kinds[0])
        parts = [fn.reconstruction_loss(sq_MB.index_select(0, getattr(self, f"recon_{kind}")), kind)
                 for kind in self._recon_kinds]
        return torch.cat(parts).index_select(0, self.recon_order)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s tensors, keyed and shaped as its :class:`SAE`'s state dict (copies: a slice would carry
        the whole stack into a file)."""
        state = {name: getattr(self, name)[m].detach().clone() for name in (*MEMBER_PARAMS, *self.member_buffers)}
        if self.cfgs[m].norm == "store_stats":
            state.update({name: getattr(self, name).clone() for name in NORM_BUFFERS})
        return state

    @torch.no_grad()
    def load_member(self, m: int, state: dict[str, torch.Tensor]) -> None:
        """Put an SAE's state dict (as :meth:`member_state` gives it) into slot ``m``."""
        for name in (*MEMBER_PARAMS, *self.member_buffers):
            getattr(self, name)[m].copy_(state[name])

    def member_sae(self, m: int) -> SAE:
        """Member ``m`` as an :class:`SAE` on the CPU (what a run directory saves and exports)."""
        stats = {"store_mean": self.norm_mean.cpu(), "store_std": self.norm_std.cpu()} if hasattr(
            self, "norm_mean") else {}
        sae = SAE(self.cfgs[m], self.d_model, **stats)
        sae.load_state_dict(self.member_state(m))
        return sae
