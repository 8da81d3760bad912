"""`pipeline harvest`."""

from __future__ import annotations

import json
import logging
import os

import click

from harvest.config import COMPUTE_DTYPES, STORE_DTYPES, HarvestConfig
from pipeline.console import console, progress_bar
from pipeline.options import parse_storage_options, storage_option

log = logging.getLogger("pipeline")


def _shard_from_env(shard: int | None, num_shards: int | None) -> tuple[int, int]:
    """Explicit options win; else torchrun's RANK / WORLD_SIZE; else a single shard."""
    if shard is not None or num_shards is not None:
        return shard or 0, num_shards or 1
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


@click.command()
@click.option("--store", required=True, help="Store path or fsspec URL (s3://bucket/acts.zarr).")
@click.option("--model", default="google/gemma-2-2b", show_default=True, help="Hub id or local folder.")
@click.option("--revision", default=None, help="Model revision (branch, tag or commit).")
@click.option("--dataset", default="monology/pile-uncopyrighted", show_default=True,
              help="Hub data set id (streamed) or local .jsonl/.json/.txt/.parquet file, folder or glob.")
@click.option("--dataset-config", default=None, help="Hub data set configuration name.")
@click.option("--split", default="train", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--layer", default=19, show_default=True, type=int,
              help="Decoder layer (0-based); its output = hidden_states[layer + 1].")
@click.option("--tokens", default=10_000_000, show_default=True, type=int, help="Exact number of rows to store.")
@click.option("--ctx", "context_length", default=128, show_default=True, type=int,
              help="Context length in tokens, BOS included.")
@click.option("--include-bos", is_flag=True, help="Also store each context's BOS position.")
@click.option("--batch-size", type=int, default=None, help="Contexts per forward pass [64 on CUDA, 8 on CPU].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", "compute_dtype", type=click.Choice(COMPUTE_DTYPES), default="auto", show_default=True,
              help="LM compute dtype [auto: bfloat16 on CUDA, float32 on CPU].")
@click.option("--store-dtype", type=click.Choice(STORE_DTYPES), default="bfloat16", show_default=True)
@click.option("--chunk-rows", type=int, default=None, help="Rows per chunk [about 24 MiB per chunk].")
@click.option("--shard", type=int, default=None, help="This process's shard (default: torchrun RANK, else 0).")
@click.option("--num-shards", type=int, default=None, help="Shards in all (default: torchrun WORLD_SIZE, else 1).")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def harvest(storage_options: tuple[str, ...], shard: int | None, num_shards: int | None, as_json: bool,
            **options) -> None:
    """Run a causal LM over a text data set and store one layer's residual stream.

    Rerunning the same command after a crash continues where it stopped.
    """
    from harvest.runner import harvest as run_harvest

    shard, num_shards = _shard_from_env(shard, num_shards)
    cfg = HarvestConfig(
        **options, shard=shard, num_shards=num_shards, storage_options=parse_storage_options(storage_options)
    )
    label = "harvest" if num_shards == 1 else f"harvest shard {shard}/{num_shards}"
    with progress_bar(label, "tok") as update:
        result = run_harvest(cfg, on_progress=update)
    state = "complete" if result.complete else "shard done; store not complete until every shard finishes"
    console.print(
        f"[green]wrote {result.rows_written:,} rows to {cfg.store} in {result.seconds:.0f}s "
        f"({result.tokens_per_second:,.0f} tok/s); {state}[/green]"
    )
    if as_json:
        click.echo(json.dumps({**result.__dict__, "tokens_per_second": result.tokens_per_second}))
