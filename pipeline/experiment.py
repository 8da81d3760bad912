"""`pipeline experiment`: the paper's grid, or a sparsity sweep of every architecture, on one store, trained in one
pass, evaluated and reported (its presets and the sweep's values: :mod:`pipeline.presets`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fit.config import GRID_AXES, VARIANTS, SAEConfig, TrainConfig, distinct
from pipeline.errors import PipelineError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.presets import SWEEP_K, SWEEP_L1, SWEEP_VARIANTS, TOPK_FAMILY
from pipeline.report import paper

if TYPE_CHECKING:
    from fit.data import Source
    from fit.trainer import StepCallback

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Grid:
    """Which SAEs the experiment trains."""

    seeds: int = 3
    """Seeds of the two main configurations (Table 1)."""
    ablation_seeds: int = 1
    """Seeds of each ablation configuration."""
    ablations: bool = True
    """Include the paper's ablations of K, gamma (hier) and lambda (baseline and hier), at the values it reports
    (pipeline/report/paper.py ABLATIONS)."""
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
        def make(variant: str, **fields: Any) -> SAEConfig:
            return SAEConfig.of(variant, **{**self.sae, **fields})

        if self.sweep:
            return [make(v, seed=s, **at) for v in self.sweep_variants
                    for at in ([{"k": k} for k in self.sweep_k] if v in TOPK_FAMILY else
                               [{"l1": lam} for lam in self.sweep_l1])
                    for s in range(self.seeds)]
        main = [make(v, seed=s) for v in ("baseline", "hier") for s in range(self.seeds)]
        if not self.ablations:
            return main
        ablation = [make(v, seed=s, **{name: value}) for v, name, value in paper.ablations()
                    for s in range(self.ablation_seeds)]
        return distinct(main + ablation)


def run_experiment(train: TrainConfig, grid: Grid, *, evaluation: dict[str, Any] | None = None,
                   on_step: StepCallback | None = None, on_eval=None, source: Source | None = None) -> Path:
    """Train the grid in one pass (on ``source``'s rows when given, e.g. a synthetic stream), evaluate every run
    (``evaluation``: EvaluateConfig fields such as kl_contexts) on the training store and device, and write the
    report to ``train.out``/report."""
    # The stages load torch, zarr and matplotlib: imported when the experiment runs, not when its options are read.
    from fit.data import StoreSource
    from fit.trainer import fit
    from pipeline.evaluate.runner import evaluate
    from pipeline.report.report import write_report
    from store.reader import open_store

    saes = grid.saes()
    # One open for the width check and the pass (each open checks the seal and lists the chunks).
    source = source or StoreSource(open_store(train.store, storage_options=train.storage_options,
                                              allow_unsealed=train.allow_unsealed))
    grid.check_width(source.store.d_model)
    runs = [str(Path(train.out) / s.name) for s in saes]
    # Built before training so that a bad evaluation option is refused before hours of training, not after.
    eval_cfg = EvaluateConfig(runs=tuple(runs), device=train.device, allow_unsealed=train.allow_unsealed,
                              **(evaluation or {}))
    log.info("experiment: %d SAEs in one pass over %s", len(saes), train.store)
    fit(train, saes, on_step=on_step, source=source)
    evaluate(eval_cfg, on_progress=on_eval)
    return write_report(runs, Path(train.out) / "report")
