"""`pipeline experiment`: the paper's grid, or a sparsity sweep of every architecture, on one store, trained in one
pass, evaluated and reported; presets (named sets of config values) such as the paper's own code's choices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fit.architectures import variant
from fit.config import VARIANTS, SAEConfig, TrainConfig
from fit.data import Source
from fit.trainer import StepCallback, fit
from pipeline.errors import PipelineError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.runner import evaluate
from pipeline.report.report import write_report
from store.reader import open_store

log = logging.getLogger(__name__)

GRID_AXES = tuple(a for a in ("variant", "seed", "groups", "gamma", "l1", "k") if a in SAEConfig.__dataclass_fields__)
"""The SAE fields the grid sets; the other SAE fields are the same for every SAE of the experiment."""

TOPK_FAMILY = tuple(v for v in VARIANTS if "k" in variant(v).uses)
"""Variants whose sparsity is set by k (latents kept per row, or per row on average over a batch); the others are
swept over the L1 weight lambda."""
SWEEP_VARIANTS = VARIANTS
"""Every architecture fit knows (fit/architectures/), each swept."""
SWEEP_L1 = (0.32, 0.64, 1.28, 2.56, 5.12)
"""The sweep's lambdas. Measured on the demo store (Gemma-3-270M layer 13, layer-normed input, n = d = 640; one
stacked pass of 200k tokens, training-batch L0 at its end): lambda 0.04, 0.08, 0.16, 0.32, 0.64, 1.28 gave L0 421,
395, 353, 290, 206, 133, so L0 falls only ~25% per doubling of lambda there, and the high lambdas were still
falling; these five continue the doublings to reach the tens (docs/experiment.md). Not yet measured above 1.28."""
SWEEP_K = (16, 32, 64, 128, 256)
"""The sweep's k for the TopK family: L0 is k (BatchTopK/Matryoshka: k on average), so 16-256 spans the same
range as the lambdas' L0."""


@dataclass(frozen=True)
class Grid:
    """Which SAEs the experiment trains."""

    seeds: int = 3
    """Seeds of the two main configurations (Table 1)."""
    ablation_seeds: int = 1
    """Seeds of each ablation configuration."""
    ablations: bool = True
    """Include K in {3, 7}, gamma in {1.25, 2.0} and lambda = 0.06 (baseline and hier)."""
    sweep: bool = False
    """Instead of the paper's grid, a sparsity sweep: each of --sweep-variant at each --sweep-l1 (L1 variants) or
    --sweep-k (TopK family), --seeds seeds each, all in one pass; the report compares them at matched L0."""
    sweep_variants: tuple[str, ...] = SWEEP_VARIANTS
    """The architectures a sweep trains."""
    sweep_l1: tuple[float, ...] = SWEEP_L1
    """The L1 weights (lambda) a sweep trains the L1 variants at."""
    sweep_k: tuple[int, ...] = SWEEP_K
    """The k a sweep trains the TopK family at."""
    sae: dict[str, Any] = field(default_factory=dict)
    """SAE fields shared by every SAE of the grid (expansion, norm, recon); not the grid's own axes."""

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.ablation_seeds < 0:
            raise PipelineError(f"--seeds must be at least 1 and --ablation-seeds 0 or more, got {self.seeds} "
                                f"and {self.ablation_seeds}")
        if set(self.sae) & set(GRID_AXES):
            raise PipelineError(f"the grid sets {', '.join(GRID_AXES)} itself")
        unknown = [v for v in self.sweep_variants if v not in VARIANTS]
        if unknown:
            raise PipelineError(f"unknown --sweep-variant {', '.join(unknown)}: use {', '.join(VARIANTS)}")
        if not self.sweep_variants or not self.sweep_l1 or not self.sweep_k:
            raise PipelineError("a sweep needs at least one variant, one --sweep-l1 and one --sweep-k")
        if min(self.sweep_l1) < 0 or min(self.sweep_k) < 1:
            raise PipelineError(f"--sweep-l1 must be >= 0 and --sweep-k >= 1, got {self.sweep_l1} and "
                                f"{self.sweep_k}")

    @property
    def variants(self) -> tuple[str, ...]:
        """The architectures the grid trains."""
        return self.sweep_variants if self.sweep else ("baseline", "hier")

    def check_width(self, d_model: int) -> None:
        """Refuse, before any training, a sweep value the SAEs' width cannot take, naming the sweep's option."""
        n = round(self.sae.get("expansion", SAEConfig.expansion) * d_model)
        too_big = [k for k in self.sweep_k if k > n] if self.sweep and set(self.variants) & set(TOPK_FAMILY) else []
        if too_big:
            raise PipelineError(f"--sweep-k {too_big[0]} is more than the {n} latents of these SAEs: lower it, or "
                                "raise --expansion")

    def saes(self) -> list[SAEConfig]:
        def make(**fields: Any) -> SAEConfig:
            return SAEConfig(**fields, **self.sae)

        if self.sweep:
            out = []
            for v in self.sweep_variants:
                settings = [{"k": k} for k in self.sweep_k] if v in TOPK_FAMILY else [
                    {"l1": lam} for lam in self.sweep_l1]
                out += [make(variant=v, seed=s, **at) for at in settings for s in range(self.seeds)]
            return out
        main = [make(variant=v, seed=s) for v in ("baseline", "hier") for s in range(self.seeds)]
        if not self.ablations:
            return main
        variations = [dict(variant="hier", groups=3), dict(variant="hier", groups=7),
                      dict(variant="hier", gamma=1.25), dict(variant="hier", gamma=2.0),
                      dict(variant="baseline", l1=0.06), dict(variant="hier", l1=0.06)]
        ablation = [make(**v, seed=s) for v in variations for s in range(self.ablation_seeds)]
        seen: dict[str, SAEConfig] = {}
        for cfg in main + ablation:
            seen.setdefault(cfg.name, cfg)
        return list(seen.values())


@dataclass(frozen=True)
class Preset:
    """A named set of config values: the SAE fields and training-pass fields it sets. Options given on the command
    line override it."""

    name: str
    description: str
    sae: dict[str, Any]
    """SAEConfig fields."""
    train: dict[str, Any]
    """TrainConfig fields."""

    def __post_init__(self) -> None:
        # Checked against the configs here, so that a renamed field fails at import, not in a user's run.
        SAEConfig(**self.sae)
        TrainConfig(store="-", out="-", **self.train)

    def apply(self, sae: dict[str, Any], train: dict[str, Any], given: set[str]) -> None:
        """Set the preset's values in the two configs' keyword arguments, except the fields in ``given``."""
        for target, values in ((sae, self.sae), (train, self.train)):
            target.update({k: v for k, v in values.items() if k not in given})


PRESETS = {p.name: p for p in (
    Preset("paper-code", "the choices of the code the paper's figures came from: unsquared L2 reconstruction, no "
           "input normalisation, Adam without weight decay, the paper's lambda 0.04 and batch 2048",
           sae={"recon": "l2", "norm": "none", "l1": 0.04},
           train={"weight_decay": 0.0, "batch_size": 2048}),
)}
"""The presets, by name (``--preset``)."""


def run_experiment(train: TrainConfig, grid: Grid, *, evaluation: dict[str, Any] | None = None,
                   on_step: StepCallback | None = None, on_eval=None, source: Source | None = None) -> Path:
    """Train the grid in one pass (on ``source``'s rows when given, e.g. a synthetic stream), evaluate every run
    (``evaluation``: EvaluateConfig fields such as kl_contexts) on the training store and device, and write the
    report to ``train.out``/report."""
    saes = grid.saes()
    grid.check_width((source.store if source is not None else open_store(
        train.store, storage_options=train.storage_options, allow_unsealed=train.allow_unsealed)).d_model)
    runs = [str(Path(train.out) / s.name) for s in saes]
    # Built before training so that a bad evaluation option is refused before hours of training, not after.
    eval_cfg = EvaluateConfig(runs=tuple(runs), device=train.device, allow_unsealed=train.allow_unsealed,
                              **(evaluation or {}))
    log.info("experiment: %d SAEs in one pass over %s", len(saes), train.store)
    fit(train, saes, on_step=on_step, source=source)
    evaluate(eval_cfg, on_progress=on_eval)
    return write_report(runs, Path(train.out) / "report")
