"""`pipeline synth`: its options are SynthConfig's fields."""

from __future__ import annotations

import dataclasses
import json

import click

from harvest.config import STORE_DTYPES
from harvest.synthetic.config import SAMPLERS, SynthConfig
from harvest.synthetic.presets import PRESETS
from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_kwargs, config_options

SYNTH_OPTIONS = {
    "preset": Opt(choices=tuple(PRESETS)),
    "config": Opt(metavar="FILE"),
    "sampler": Opt(choices=SAMPLERS),
    "store_dtype": Opt(choices=STORE_DTYPES),
}


@click.command()
@config_options(SynthConfig, opts=SYNTH_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def synth(as_json: bool, **values) -> None:
    """Sample rows from a synthetic model with known features (SAELens's sae_lens.synthetic: a preset, or a
    SyntheticModelConfig JSON) into a store of the harvest's format, with their ground truth.

    Rerunning the same command after a crash continues where it stopped; the model is built once and cached.
    """
    from harvest.synthetic.runner import synthesize

    cfg = SynthConfig(**config_kwargs(SynthConfig, values))
    with progress_bar("synthetic model: orthogonalise", "step") as build, progress_bar("synth", "row") as update:
        result = synthesize(cfg, on_progress=update, on_build=build)
    state = "complete" if result.complete else "not complete"
    console.print(f"[green]wrote {result.rows_written:,} rows to {result.store} ({state}; "
                  f"{result.rows_per_second:,.0f} rows/s, true L0 {result.true_l0:.2f})[/green]", highlight=False)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), "rows_per_second": result.rows_per_second}))
