"""`pipeline experiment`: the paper's grid on one store, trained in one pass, evaluated and reported."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fit.config import SAEConfig, TrainConfig
from fit.trainer import StepCallback, fit
from pipeline.errors import PipelineError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.runner import evaluate
from pipeline.report.report import write_report

log = logging.getLogger(__name__)

GRID_AXES = ("variant", "seed", "groups", "gamma", "l1")
"""The SAE fields the grid sets; the other SAE fields are the same for every SAE of the experiment."""


@dataclass(frozen=True)
class Grid:
    """Which SAEs the experiment trains."""

    seeds: int = 3
    """Seeds of the two main configurations (Table 1)."""
    ablation_seeds: int = 1
    """Seeds of each ablation configuration."""
    ablations: bool = True
    """Include K in {3, 7}, gamma in {1.25, 2.0} and lambda = 0.06 (baseline and hier)."""
    sae: dict[str, Any] = field(default_factory=dict)
    """SAE fields shared by every SAE of the grid (expansion, norm, recon); not the grid's own axes."""

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.ablation_seeds < 0:
            raise PipelineError(f"--seeds must be at least 1 and --ablation-seeds 0 or more, got {self.seeds} "
                                f"and {self.ablation_seeds}")
        if set(self.sae) & set(GRID_AXES):
            raise PipelineError(f"the grid sets {', '.join(GRID_AXES)} itself")

    def saes(self) -> list[SAEConfig]:
        def make(**fields: Any) -> SAEConfig:
            return SAEConfig(**fields, **self.sae)

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


def run_experiment(train: TrainConfig, grid: Grid, *, evaluation: dict[str, Any] | None = None,
                   on_step: StepCallback | None = None, on_eval=None) -> Path:
    """Train the grid in one pass, evaluate every run (``evaluation``: EvaluateConfig fields such as
    kl_contexts) on the training store and device, and write the report to ``train.out``/report."""
    saes = grid.saes()
    runs = [str(Path(train.out) / s.name) for s in saes]
    # Built before training so that a bad evaluation option is refused before hours of training, not after.
    eval_cfg = EvaluateConfig(runs=tuple(runs), device=train.device, **(evaluation or {}))
    log.info("experiment: %d SAEs in one pass over %s", len(saes), train.store)
    fit(train, saes, on_step=on_step)
    evaluate(eval_cfg, on_progress=on_eval)
    return write_report(runs, Path(train.out) / "report")
