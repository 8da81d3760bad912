"""`pipeline harvest`: its options are HarvestConfig's fields."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import click

from harvest.config import COMPUTE_DTYPES, STORE_DTYPES, HarvestConfig
from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_kwargs, config_options

log = logging.getLogger("pipeline")

HARVEST_OPTIONS = {
    "layers": Opt(names=("--layer",)),
    "context_length": Opt(names=("--ctx",)),
    "compute_dtype": Opt(names=("--dtype",), choices=COMPUTE_DTYPES),
    "store_dtype": Opt(choices=STORE_DTYPES),
    # Left unset, the shard comes from torchrun's environment (see _shard_from_env).
    "shard": Opt(default=None, help="This process's shard (default: torchrun RANK, else 0)."),
    "num_shards": Opt(default=None, help="Shards in all (default: torchrun WORLD_SIZE, else 1)."),
}


def _shard_from_env(shard: int | None, num_shards: int | None) -> tuple[int, int]:
    """Explicit options win; else torchrun's RANK / WORLD_SIZE; else a single shard."""
    if shard is not None or num_shards is not None:
        return shard or 0, num_shards or 1
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


@click.command()
@config_options(HarvestConfig, opts=HARVEST_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def harvest(as_json: bool, **values) -> None:
    """Run a causal LM over a text data set and store one layer's residual stream (or several layers', one store
    each, from one forward pass).

    Rerunning the same command after a crash continues where it stopped.
    """
    from harvest.runner import harvest as run_harvest

    options = config_kwargs(HarvestConfig, values)
    shard, num_shards = _shard_from_env(options.pop("shard"), options.pop("num_shards"))
    cfg = HarvestConfig(**options, shard=shard, num_shards=num_shards)
    label = "harvest" if num_shards == 1 else f"harvest shard {shard}/{num_shards}"
    if len(cfg.layers) > 1:
        label += " -> " + ", ".join(cfg.store_of(layer) for layer in cfg.layers)
    with progress_bar(label, "tok") as update:
        result = run_harvest(cfg, on_progress=update)
    for store in result.stores:
        state = "complete" if store.complete else "shard done; store not complete until every shard finishes"
        console.print(f"[green]layer {store.layer}: wrote {store.rows_written:,} rows to {store.store}; "
                      f"{state}[/green]", highlight=False)
    console.print(f"[green]{result.rows_written:,} tokens through the model in {result.seconds:.0f}s "
                  f"({result.tokens_per_second:,.0f} tok/s)[/green]", highlight=False)
    if as_json:
        click.echo(json.dumps({**dataclasses.asdict(result), "tokens_per_second": result.tokens_per_second}))
