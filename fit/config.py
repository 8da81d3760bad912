"""Typed configurations of the fit stage: one SAE (:class:`SAEConfig`) and one pass over a store
(:class:`TrainConfig`). The CLI maps its options onto these fields."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from fit.errors import FitError
from store.configs import check_finite

VARIANTS = ("baseline", "hier")
NORMS = ("layer_norm", "store_stats", "none")
RECON_LOSSES = ("mse", "l2")
DATA_MODES = ("auto", "memory", "stream")
TRACKERS = ("wandb", "trackio", "tensorboard")


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class SAEConfig:
    """One SAE: its architecture and sparsity penalty."""

    variant: str = "hier"
    """``baseline`` (uniform L1 weight ``l1``) or ``hier`` (group k of K weighted ``l1 * gamma**(k-1)``)."""
    l1: float = 0.04
    """Base L1 weight lambda."""
    groups: int = 5
    """K, the number of equal latent groups (hier only)."""
    gamma: float = 1.5
    """Geometric penalty multiplier between consecutive groups (hier only)."""
    expansion: float = 1.0
    """Latents per input dimension: n = round(expansion * d_model) (the paper: 1, n = d = 2304)."""
    seed: int = 0
    """Seed of the weight initialisation (the data order is shared by every SAE of a pass)."""
    norm: str = "layer_norm"
    """Encoder input normalisation: ``layer_norm`` per row (the paper's), ``store_stats`` per dimension with the
    store's mean and variance, or ``none``. The decoder reconstructs the normalised input; reconstructions are
    mapped back to activation space by the inverse normalisation."""
    recon: str = "mse"
    """Reconstruction loss: ``mse`` (squared L2 error per row, the paper's) or ``l2`` (unsquared norm)."""

    def __post_init__(self) -> None:
        check_finite(self, FitError)
        if self.variant not in VARIANTS:
            raise FitError(f"unknown variant {self.variant!r}: use {' or '.join(VARIANTS)}")
        if self.l1 < 0:
            raise FitError(f"the L1 weight must be non-negative, got {self.l1}")
        if self.variant == "hier" and (self.groups < 1 or self.gamma <= 0):
            raise FitError(f"hier needs groups >= 1 and gamma > 0, got K={self.groups}, gamma={self.gamma}")
        if self.expansion <= 0:
            raise FitError(f"expansion must be positive, got {self.expansion}")
        if self.norm not in NORMS:
            raise FitError(f"unknown normalisation {self.norm!r}: use one of {', '.join(NORMS)}")
        if self.recon not in RECON_LOSSES:
            raise FitError(f"unknown reconstruction loss {self.recon!r}: use mse or l2")
        if self.variant == "baseline" and (self.groups, self.gamma) != (1, 1.0):
            object.__setattr__(self, "groups", 1)  # the baseline has one group of uniform weight
            object.__setattr__(self, "gamma", 1.0)

    @property
    def name(self) -> str:
        """Run directory name: every field that differs from the paper's defaults appears in it."""
        parts = [self.variant]
        if self.variant == "hier":
            parts += [f"K{self.groups}", f"g{_fmt(self.gamma)}"]
        parts.append(f"l{_fmt(self.l1)}")
        if self.expansion != 1.0:
            parts.append(f"x{_fmt(self.expansion)}")
        if self.norm != "layer_norm":
            parts.append(self.norm)
        if self.recon != "mse":
            parts.append(self.recon)
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    def n_latents(self, d_model: int) -> int:
        n = round(self.expansion * d_model)
        if n < self.groups:
            raise FitError(f"{n} latents cannot form {self.groups} groups: raise --expansion or lower -K")
        return n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand_grid(variants: list[str], seeds: list[int], groups: list[int], gammas: list[float], l1s: list[float],
                **common: Any) -> list[SAEConfig]:
    """Every combination, with duplicates removed (K and gamma do not apply to the baseline)."""
    out: dict[str, SAEConfig] = {}
    for variant, seed, n_groups, gamma, l1 in itertools.product(variants, seeds, groups, gammas, l1s):
        cfg = SAEConfig(variant=variant, seed=seed, groups=n_groups, gamma=gamma, l1=l1, **common)
        out.setdefault(cfg.name, cfg)
    return list(out.values())


@dataclass(frozen=True)
class TrainConfig:
    """One pass over a store that trains one or more SAEs on the same batches."""

    store: str
    """Store path or fsspec URL."""
    out: str
    """Run directory: each SAE gets ``out/<name>/``."""
    batch_size: int = 2048
    """Rows (tokens) per optimiser step, summed over all data-parallel processes."""
    lr: float = 3e-4
    """AdamW learning rate (after the warm-up)."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's (beta1, beta2)."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 (the paper uses none)."""
    l1_warmup_steps: int = 0
    """Linear warm-up of the sparsity penalty from 0 (the paper uses none)."""
    tokens: int | None = None
    """Training tokens; None is one pass over the training rows (10M tokens, 5% held out: ~4,640 steps of 2048)."""
    holdout: float = 0.05
    """Fraction of the store's contexts (its last ones) held out from training for evaluation."""
    data_seed: int = 0
    """Seed of the shuffled batch order, shared by every SAE of the pass."""
    shuffle_rows: int = 65536
    """Rows shuffled together when streaming (whole chunks in random order plus this window)."""
    data: str = "auto"
    """``memory``: load the training rows once into RAM (or GPU memory) and sample there; ``stream``: read
    chunks as training goes; ``auto``: memory when the rows fit comfortably, else stream."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    autocast_bf16: bool = False
    """bf16 autocast for the SAE forward/backward on CUDA (weights and optimizer stay float32)."""
    stack: bool = True
    """Train the SAEs of one shape (same latents and architecture) as one batched computation with stacked
    weights. Off, each SAE trains as a stack of its own, one after another each step: the per-SAE loop, kept as
    the comparison the benchmark measures stacking against. Both give the same weights to float32 rounding; a
    pass resumes bit for bit only with the setting it was started with."""
    compile: bool = False
    """torch.compile each stack's forward and backward (needs a C++ compiler on CPU). Off by default: on the 2-core
    CPU we measured, its ~21 s warm-up made a 60-step pass slower (0.91x) though later steps ran 1.29x faster,
    paying the warm-up back after ~100 steps (docs/fit.md); not measured on a GPU."""
    log_every: int = 50
    """Steps between metric lines in metrics.jsonl (and progress-bar updates of loss and L0)."""
    checkpoint_every: int = 500
    """Steps between checkpoints (0: only at the end)."""
    verify_checksums: bool = True
    """Check every chunk's crc32c as it is read."""
    streams: int | None = None
    """Streams each global batch is drawn from, one per data-parallel process; None = the number of processes
    (torchrun's WORLD_SIZE, else 1). A single process with ``streams = G`` sees a G-process job's batches."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for opening a remote store (e.g. ``{"anon": true}`` or an endpoint); empty for local."""
    track: str | None = None
    """Also send every SAE's metrics.jsonl lines to an experiment tracker, one tracker run per SAE: ``wandb``
    (offline unless WANDB_MODE is set), ``trackio`` (local) or ``tensorboard`` (event files in
    ``out/<name>/tensorboard/``); None tracks nothing. Each needs its extra: pip install 'hfg-sae[wandb]'."""

    def __post_init__(self) -> None:
        check_finite(self, FitError)
        if self.batch_size <= 0:
            raise FitError(f"--batch-size must be positive, got {self.batch_size}")
        if not all(0 <= b < 1 for b in self.adam_betas) or len(self.adam_betas) != 2:
            raise FitError(f"--adam-betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.shuffle_rows < 1:
            raise FitError(f"--shuffle-rows must be at least 1, got {self.shuffle_rows}")
        if self.data_seed < 0:
            raise FitError(f"--data-seed must be 0 or more, got {self.data_seed}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise FitError(f"need lr > 0 and weight decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.tokens is not None and self.tokens < self.batch_size:
            raise FitError(f"--tokens {self.tokens} is less than one batch of {self.batch_size}")
        if not 0 <= self.holdout < 1:
            raise FitError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.data not in DATA_MODES:
            raise FitError(f"--data must be one of {', '.join(DATA_MODES)}, got {self.data}")
        if self.log_every <= 0 or self.checkpoint_every < 0:
            raise FitError("--log-every must be positive and --checkpoint-every non-negative")
        if min(self.lr_warmup_steps, self.l1_warmup_steps) < 0:
            raise FitError("warm-up steps must be non-negative")
        if self.track is not None and self.track not in TRACKERS:
            raise FitError(f"--track must be one of {', '.join(TRACKERS)}, got {self.track}")
        if self.streams is not None and (self.streams < 1 or self.batch_size % self.streams):
            raise FitError(f"--streams {self.streams} must be positive and divide --batch-size {self.batch_size}")

    def identity(self) -> dict[str, Any]:
        """Fields that decide the trained weights, besides the store itself (not logging, device, data mode)."""
        keep = ("batch_size", "lr", "weight_decay", "adam_betas", "lr_warmup_steps", "l1_warmup_steps",
                "tokens", "holdout", "data_seed", "shuffle_rows")
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keep}
