"""`pipeline experiment`: the grid's options (Grid), every option of a training pass (TrainConfig) and the SAE
options the grid leaves open, the evaluation's KL options, and a preset."""

from __future__ import annotations

import click

from fit.config import GRID_AXES, SAEConfig, TrainConfig
from harvest.synthetic.config import StreamConfig
from pipeline.cli.console import console, progress_bar
from pipeline.cli.fit import (
    SAE_OPTIONS,
    STREAM_OPTIONS,
    STREAM_STORE,
    TRAIN_OPTIONS,
    check_options_apply,
    stream_config,
    stream_source,
    train_config,
)
from pipeline.cli.options import Opt, config_kwargs, config_options, given_on_command_line
from pipeline.evaluate.config import EvaluateConfig
from pipeline.experiment import Grid
from pipeline.presets import PRESETS, SWEEP_VARIANTS

EVAL_FIELDS = tuple(f for f in ("kl_contexts", "batch_contexts", "absorption", "absorption_words",
                                 "absorption_words_file", "absorption_seed", "absorption_cache")
                    if f in EvaluateConfig.__dataclass_fields__)
"""The evaluation options the experiment passes on (it evaluates its own runs, on its own store and device)."""

GRID_OPTIONS = {"ablations": Opt(names=("--no-ablations",), switch_off=True,
                                 help="Only the two main configurations."),
                "sweep_variants": Opt(names=("--sweep-variant",), choices=SWEEP_VARIANTS),
                "sweep_l1": Opt(names=("--sweep-l1",)),
                "sweep_k": Opt(names=("--sweep-k",))}


@click.command()
@config_options(TrainConfig, opts={**TRAIN_OPTIONS, "store": STREAM_STORE})
@config_options(StreamConfig, opts=STREAM_OPTIONS)
@config_options(Grid, exclude=("sae",), opts=GRID_OPTIONS)
@config_options(SAEConfig, exclude=GRID_AXES, opts=SAE_OPTIONS)
@config_options(EvaluateConfig, only=EVAL_FIELDS)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="A named set of option values; options given beside it win. paper-code: "
                   f"{PRESETS['paper-code'].description}.")
def experiment(preset: str | None, **values) -> None:
    """The paper's grid on a store (baseline and hier x seeds, plus the K, gamma and lambda ablations), or with
    --sweep every architecture at several sparsities, all in one pass over the store; then evaluation and the
    report (in OUT/report/)."""
    from pipeline.experiment import run_experiment

    given = given_on_command_line()
    stream = stream_config(values)
    sae = config_kwargs(SAEConfig, values)
    train_kwargs = config_kwargs(TrainConfig, values)
    if preset is not None:
        # The grid sets its own axes (its main lambda is the paper's): the preset fills in the rest.
        PRESETS[preset].apply(sae, train_kwargs, given | set(GRID_AXES))
    grid = Grid(**config_kwargs(Grid, values), sae=sae)
    check_options_apply(grid.variants, given)
    train = train_config(train_kwargs, stream)
    evaluation = config_kwargs(EvaluateConfig, values)
    source = stream_source(stream, train)
    with progress_bar("fit", "step") as fit_update, progress_bar("evaluate", "row") as eval_update:
        path = run_experiment(train, grid, evaluation=evaluation, on_step=fit_update, on_eval=eval_update,
                              source=source)
    console.print(f"[green]wrote {path}[/green]")
