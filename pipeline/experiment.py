"""`pipeline experiment`: the paper's grid on one store, trained in one pass, evaluated and reported."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fit.config import SAEConfig, TrainConfig
from fit.trainer import StepCallback, fit
from pipeline.evaluate.runner import evaluate
from pipeline.report.report import write_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """Which SAEs the experiment trains."""

    seeds: int = 3
    """Seeds of the two main configurations (Table 1)."""
    ablation_seeds: int = 1
    """Seeds of each ablation configuration."""
    ablations: bool = True
    """Include K in {3, 7}, gamma in {1.25, 2.0} and lambda = 0.06 (baseline and hier)."""

    def saes(self) -> list[SAEConfig]:
        main = [SAEConfig(variant=v, seed=s) for v in ("baseline", "hier") for s in range(self.seeds)]
        if not self.ablations:
            return main
        variations = [dict(variant="hier", groups=3), dict(variant="hier", groups=7),
                      dict(variant="hier", gamma=1.25), dict(variant="hier", gamma=2.0),
                      dict(variant="baseline", l1=0.06), dict(variant="hier", l1=0.06)]
        ablation = [SAEConfig(**v, seed=s) for v in variations for s in range(self.ablation_seeds)]
        seen: dict[str, SAEConfig] = {}
        for cfg in main + ablation:
            seen.setdefault(cfg.name, cfg)
        return list(seen.values())


def run_experiment(train: TrainConfig, grid: Grid, *, kl_contexts: int | None = None, batch_contexts: int = 2,
                   on_step: StepCallback | None = None, on_eval=None) -> Path:
    saes = grid.saes()
    log.info("experiment: %d SAEs in one pass over %s", len(saes), train.store)
    fit(train, saes, on_step=on_step)
    runs = [str(Path(train.out) / s.name) for s in saes]
    evaluate(runs, kl_contexts=kl_contexts, batch_contexts=batch_contexts, device=train.device,
             on_progress=on_eval)
    return write_report(runs, Path(train.out) / "report")
