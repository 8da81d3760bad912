"""`pipeline experiment`: the grid's options (Grid), every option of a training pass (TrainConfig) and the SAE
options the grid leaves open, and the evaluation's KL options."""

from __future__ import annotations

import click

from fit.config import SAEConfig, TrainConfig
from pipeline.cli.console import console, progress_bar
from pipeline.cli.fit import SAE_OPTIONS, TRAIN_OPTIONS
from pipeline.cli.options import Opt, config_kwargs, config_options
from pipeline.evaluate.config import EvaluateConfig
from pipeline.experiment import GRID_AXES, Grid

EVAL_FIELDS = ("kl_contexts", "batch_contexts")
"""The evaluation options the experiment passes on (it evaluates its own runs, on its own store and device)."""

GRID_OPTIONS = {"ablations": Opt(names=("--no-ablations",), switch_off=True,
                                 help="Only the two main configurations.")}


@click.command()
@config_options(TrainConfig, opts=TRAIN_OPTIONS)
@config_options(Grid, exclude=("sae",), opts=GRID_OPTIONS)
@config_options(SAEConfig, exclude=GRID_AXES, opts=SAE_OPTIONS)
@config_options(EvaluateConfig, only=EVAL_FIELDS)
def experiment(**values) -> None:
    """The paper's grid on a store: baseline and hier x seeds, plus the K, gamma and lambda ablations, all in one
    pass over the store; then evaluation and the report (in OUT/report/)."""
    from pipeline.experiment import run_experiment

    grid = Grid(**config_kwargs(Grid, values), sae=config_kwargs(SAEConfig, values))
    train = TrainConfig(**config_kwargs(TrainConfig, values))
    console.print(f"training {len(grid.saes())} SAEs in one pass: {', '.join(s.name for s in grid.saes())}")
    with progress_bar("fit", "step") as fit_update, progress_bar("evaluate", "row") as eval_update:
        path = run_experiment(train, grid, evaluation=config_kwargs(EvaluateConfig, values), on_step=fit_update,
                              on_eval=lambda d, t, what: eval_update(d, t, what))
    console.print(f"[green]wrote {path}[/green]")
