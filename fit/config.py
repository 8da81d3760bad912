"""Typed configurations of the fit stage: one SAE (:class:`SAEConfig`) and one pass over a store
(:class:`TrainConfig`). The CLI maps its options onto these fields."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from fit.architectures import ARCH_FIELDS, variant, variants
from fit.architectures.topk import AUX_K, TopKFields
from fit.errors import FitError
from store.configs import check_finite, option_name

VARIANTS = variants()
"""Every registered architecture variant (:mod:`fit.architectures`), in ``--variant``'s order."""
NORMS = ("layer_norm", "store_stats", "none")
RECON_LOSSES = ("mse", "l2")
DATA_MODES = ("auto", "memory", "stream")
SPARSE_MODES = ("auto", "on", "off")
TRACKERS = ("wandb", "trackio", "tensorboard")


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class SAEConfig:
    """One SAE: its architecture and sparsity penalty.

    The architecture fields (:data:`fit.architectures.ARCH_FIELDS`) belong to the variants that take them (each
    variant's fields class, fit/architectures/, holds their defaults and checks): left at None, a field takes its
    variant's default; given to a variant that does not take it, it is refused, never rewritten. After
    construction, the fields the variant does not take are None."""

    variant: str = "hier"
    """The architecture (fit/architectures/): ``baseline`` (ReLU, uniform L1 weight ``l1``), ``hier`` (group k
    of K weighted ``l1 * gamma**(k-1)``), ``topk`` (k latents per row), ``batchtopk`` (k x B over the batch, a
    threshold at inference), ``matryoshka`` (BatchTopK with nested prefix reconstructions), ``hier-matryoshka``
    (hier's group penalty with the prefix reconstructions)."""
    l1: float | None = None
    """Base L1 weight lambda."""
    groups: int | None = None
    """K, the number of equal latent groups (hier's penalty groups; Matryoshka's prefixes end at their ends unless
    --prefixes is given)."""
    gamma: float | None = None
    """Geometric penalty multiplier between consecutive groups."""
    k: int | None = None
    """Active latents per row: exactly k for topk, k x batch rows over the whole batch for batchtopk and
    matryoshka (k per row on average)."""
    aux_alpha: float | None = None
    """Weight of the AuxK dead-latent loss (Gao et al. use 1/32 = 0.03125); 0 turns it off."""
    aux_k: int | None = None
    """AuxK's dead latents per row that reconstruct the residual (Gao et al.'s 512; by default at most half the
    latents, and a value given above half is refused)."""
    dead_tokens: int | None = None
    """A latent that has not fired in this many training rows is dead for AuxK. Gao et al. use 10M, which is a
    whole pass over a paper-sized store (nothing would ever count as dead); 1M is about a tenth of one."""
    prefixes: tuple[int, ...] | None = None
    """Matryoshka prefix ends as latent counts, increasing (e.g. --prefixes 128 --prefixes 512); empty: the ends
    of the K groups of --groups, the hierarchical SAE's, so the two compare group for group. The whole dictionary
    is always the last prefix."""
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
            raise FitError(f"unknown variant {self.variant!r}: use one of {', '.join(VARIANTS)}")
        takes = variant(self.variant).uses
        given = {f: getattr(self, f) for f in ARCH_FIELDS if getattr(self, f) is not None}
        refused = [f for f in given if f not in takes]
        if refused:
            users = [v for v in VARIANTS if refused[0] in variant(v).uses]
            raise FitError(f"{self.variant} takes no {option_name(refused[0])} (it takes "
                           f"{', '.join(option_name(f) for f in takes)}): leave it out, or use a variant that takes "
                           f"it ({', '.join(users)})")
        fields = variant(self.variant).fields(**given)  # the variant's defaults and checks
        for name in takes:
            object.__setattr__(self, name, getattr(fields, name))
        if self.expansion <= 0:
            raise FitError(f"expansion must be positive, got {self.expansion}")
        if self.norm not in NORMS:
            raise FitError(f"unknown normalisation {self.norm!r}: use one of {', '.join(NORMS)}")
        if self.recon not in RECON_LOSSES:
            raise FitError(f"unknown reconstruction loss {self.recon!r}: use mse or l2")

    @classmethod
    def of(cls, variant_: str, **fields: Any) -> SAEConfig:
        """An SAE of ``variant_`` from fields meant for several variants (a grid's, a preset's): the architecture
        fields it does not take, and fields left at None, are dropped."""
        if variant_ not in VARIANTS:
            raise FitError(f"unknown variant {variant_!r}: use one of {', '.join(VARIANTS)}")
        takes = variant(variant_).uses
        kept = {k: v for k, v in fields.items() if v is not None and (k not in ARCH_FIELDS or k in takes)}
        return cls(variant=variant_, **kept)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SAEConfig:
        """The SAE a config.json's ``sae`` section (:meth:`to_dict`, of this version or an older one) describes:
        the values it records for fields its variant does not take (the baseline's one group) are dropped."""
        return cls.of(record.get("variant", cls.variant), **{k: v for k, v in record.items() if k != "variant"})

    @property
    def arch_fields(self) -> Any:
        """The variant's fields (an instance of its fields class), which its architecture is built from."""
        return variant(self.variant).fields(**{name: getattr(self, name) for name in variant(self.variant).uses})

    @property
    def uses(self) -> tuple[str, ...]:
        """The architecture fields that make a difference to this SAE: those its variant takes, less groups when
        the prefixes are given (groups only placed the default ones) and AuxK's when it is off."""
        used = variant(self.variant).uses
        if "prefixes" in used and self.prefixes and "gamma" not in used:
            used = tuple(f for f in used if f != "groups")
        if "aux_alpha" in used and self.aux_alpha == 0:
            used = tuple(f for f in used if f not in ("aux_k", "dead_tokens"))
        return used

    @property
    def name(self) -> str:
        """Run directory name: the architecture fields the variant uses, then every other field that differs from
        the paper's defaults (baseline and hier runs keep the names they always had)."""
        parts = [self.variant]
        for f in ARCH_FIELDS:
            if f in self.uses and (part := _name_part(f, getattr(self, f))):
                parts.append(part)
        if self.expansion != 1.0:
            parts.append(f"x{_fmt(self.expansion)}")
        if self.norm != "layer_norm":
            parts.append(self.norm)
        if self.recon != "mse":
            parts.append(self.recon)
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    @property
    def label(self) -> str:
        """The architecture in words, for reports and the browser (:attr:`name` is its run directory's): the variant
        and what sets it apart besides sparsity and seed (K and gamma of the grouped variants, Matryoshka prefix
        ends, AuxK, expansion, normalisation, reconstruction loss)."""
        parts = [self.variant]
        if "groups" in self.uses and not self.prefixes:
            parts.append(f"K={self.groups}")
        if "gamma" in self.uses:
            parts.append(f"γ={self.gamma:g}")
        if self.prefixes:
            parts.append("prefixes " + ",".join(map(str, self.prefixes)))
        if "aux_alpha" in self.uses and self.aux_alpha:
            parts.append(f"AuxK α={self.aux_alpha:g}")
        if self.expansion != 1.0:
            parts.append(f"x{self.expansion:g}")
        parts += [v for v, default in ((self.norm, "layer_norm"), (self.recon, "mse")) if v != default]
        return " ".join(parts)

    @property
    def sparsity_label(self) -> str:
        """Its sparsity setting in words: k for the TopK family, lambda otherwise."""
        return f"k={self.k}" if "k" in self.uses else f"λ={self.l1:g}"

    def n_latents(self, d_model: int) -> int:
        n = round(self.expansion * d_model)
        groups = self.groups if "groups" in self.uses else 1
        if n < groups:
            raise FitError(f"{n} latents cannot form {groups} groups: raise --expansion or lower -K")
        if "k" in self.uses and self.k > n:
            raise FitError(f"--k {self.k} is more than the {n} latents: lower --k or raise --expansion")
        if self.prefixes and self.prefixes[-1] > n:
            raise FitError(f"--prefixes end at {self.prefixes[-1]}, beyond the {n} latents: use ends up to {n}")
        # The default (Gao et al.'s 512) is capped at half the latents; a value given is never changed silently.
        if "aux_k" in self.uses and self.aux_k != AUX_K and self.aux_k > n // 2:
            raise FitError(f"--aux-k {self.aux_k} is more than half the {n} latents: use at most {max(n // 2, 1)}")
        return n

    def to_dict(self) -> dict[str, Any]:
        """The fields as config.json holds them: the architecture fields that make a difference, and the ones
        config.json held before there were other architectures (groups, gamma, l1) at the values that make none (one
        group, gamma 1, lambda 0), so that the config of a baseline or hier run is what it always was."""
        d = {k: v for k, v in asdict(self).items() if k not in ARCH_FIELDS or k in self.uses}
        for name, value in RECORDED_WHEN_UNUSED.items():
            d.setdefault(name, value)
        if "prefixes" in d:
            d["prefixes"] = list(d["prefixes"])  # as JSON reads it back, so a rerun's config compares equal
        return {k: d[k] for k in asdict(self) if k in d}


RECORDED_WHEN_UNUSED: dict[str, Any] = {"groups": 1, "gamma": 1.0, "l1": 0.0}
"""The fields config.json held before there were other architectures, recorded for every SAE: where they make no
difference, at the value that makes none (the record only; the SAEConfig holds None)."""


def _name_part(name: str, value: Any) -> str:
    if name == "groups":
        return f"K{value}"
    if name == "prefixes":
        return "p" + "_".join(map(str, value)) if value else ""
    if name == "aux_alpha":
        return f"aux{_fmt(value)}" if value else ""
    if name in ("aux_k", "dead_tokens"):
        default = TopKFields.__dataclass_fields__[name].default
        return f"{'ak' if name == 'aux_k' else 'dt'}{value}" if value != default else ""
    return {"gamma": "g", "l1": "l", "k": "k"}[name] + _fmt(value)


GRID_AXES = ("variant", "seed", "groups", "gamma", "l1", "k")
"""The SAE fields a grid of SAEs spans (``pipeline fit``'s repeatable options, the experiment's grid); an axis a
variant does not take does not multiply it."""


def expand_grid(axes: dict[str, list[Any]], **common: Any) -> list[SAEConfig]:
    """Every combination of the values of each axis (:data:`GRID_AXES`; an axis missing or empty is the field's
    default), with the fields ``common`` to all, for each variant the axes and fields it takes; duplicates (the
    same name) removed, in first-seen order."""
    out: list[SAEConfig] = []
    for variant_ in axes["variant"]:
        takes = set(variant(variant_).uses)
        names = [a for a in GRID_AXES[1:] if axes.get(a) and (a not in ARCH_FIELDS or a in takes)]
        for values in itertools.product(*(axes[a] for a in names)):
            out.append(SAEConfig.of(variant_, **common, **dict(zip(names, values, strict=True))))
    return distinct(out)


def distinct(saes: list[SAEConfig]) -> list[SAEConfig]:
    """The SAEs without repeats (two configs of one name are one SAE), in first-seen order."""
    seen: dict[str, SAEConfig] = {}
    for cfg in saes:
        seen.setdefault(cfg.name, cfg)
    return list(seen.values())


@dataclass(frozen=True)
class TrainConfig:
    """One pass over a store that trains one or more SAEs on the same batches."""

    store: str
    """Store path or fsspec URL; beside `pipeline fit --synthetic`, the store the synthetic stream's held-out rows are
    written to first (default OUT/heldout.zarr)."""
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
    sparse: str = "auto"
    """Compute through the active (row, latent) pairs (fit/sparse.py: the decoder and the backward touch only active
    latents): ``auto`` for TopK-family SAEs always and for a ReLU-L1 stack once its measured L0 (read at log lines)
    falls below fit.sparse.RELU_DENSITY_THRESHOLD of its latents (on a CPU; on a GPU the dense step was faster
    at every density measured, so there never); ``on`` always; ``off`` never (the dense step, the
    benchmarks' comparison). Like --no-stack it changes rounding, not the SAEs: a pass resumes bit for bit only
    with the setting it was started with."""
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
    allow_unsealed: bool = False
    """Read a store that carries no manifest (finalised by an older version of this tool, or its seal removed), whose
    chunks cannot be checked against their positions; `pipeline store finalize` seals it instead."""
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
        if self.sparse not in SPARSE_MODES:
            raise FitError(f"--sparse must be one of {', '.join(SPARSE_MODES)}, got {self.sparse}")
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
