"""`pipeline fit`: its options are TrainConfig's and SAEConfig's fields (the SAE fields that span a grid repeat)."""

from __future__ import annotations

import json

import click

from fit.config import (
    DATA_MODES,
    NORMS,
    RECON_LOSSES,
    SPARSE_MODES,
    TRACKERS,
    VARIANTS,
    SAEConfig,
    TrainConfig,
    expand_grid,
)
from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_kwargs, config_options

SAE_OPTIONS = {
    "variant": Opt(names=("--variant",), multiple=True, choices=VARIANTS),
    "seed": Opt(names=("--seed",), multiple=True),
    "groups": Opt(names=("-K", "--groups"), multiple=True),
    "gamma": Opt(names=("--gamma",), multiple=True),
    "l1": Opt(names=("--l1",), multiple=True),
    "k": Opt(names=("--k",), multiple=True),
    "prefixes": Opt(names=("--prefixes",), metavar="END"),
    "norm": Opt(choices=NORMS),
    "recon": Opt(choices=RECON_LOSSES),
}
"""The SAE grid: every combination of the repeatable options is trained (an option a variant does not use, such
as --k for hier or --l1 for topk, does not multiply that variant)."""

TRAIN_OPTIONS = {
    "lr_warmup_steps": Opt(names=("--lr-warmup",)),
    "l1_warmup_steps": Opt(names=("--l1-warmup",)),
    "data": Opt(choices=DATA_MODES),
    "sparse": Opt(choices=SPARSE_MODES),
    "track": Opt(choices=TRACKERS),
    "autocast_bf16": Opt(names=("--bf16",)),
    "verify_checksums": Opt(names=("--no-verify-checksums",), switch_off=True,
                            help="Skip the crc32c check of each chunk."),
}


def fit_options(command):
    """Every option of one training pass: the store and run directory, the pass, and the SAE grid."""
    command = config_options(SAEConfig, opts=SAE_OPTIONS)(command)
    return config_options(TrainConfig, opts=TRAIN_OPTIONS)(command)


def sae_grid(values: dict) -> list[SAEConfig]:
    """The SAEs the grid options ask for (taken out of ``values``)."""
    sae = config_kwargs(SAEConfig, values)
    grid = {axis: list(sae.pop(axis)) for axis in ("variant", "seed", "groups", "gamma", "l1", "k")}
    return expand_grid(grid["variant"], grid["seed"], grid["groups"], grid["gamma"], grid["l1"], grid["k"], **sae)


@click.command()
@fit_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def fit(as_json: bool, **values) -> None:
    """Train SAEs from a store: every combination of the repeatable options, in one pass over the store.

    Rerunning the same command after a crash resumes; finished SAEs are skipped. Under
    `torchrun --nproc-per-node G -m pipeline fit ...` the G processes train data-parallel (DDP).
    """
    from fit.trainer import fit as run_fit

    saes = sae_grid(values)
    cfg = TrainConfig(**config_kwargs(TrainConfig, values))
    console.print(f"training {len(saes)} SAE(s) in one pass: {', '.join(s.name for s in saes)}")
    with progress_bar("fit", "step") as update:
        results = run_fit(cfg, saes, on_step=update)
    for r in results:
        live = r.final.get("live_per_group", [])
        console.print(
            f"[green]{r.name}[/green]: {r.steps} steps, loss {r.final.get('loss', float('nan')):.4g}, "
            f"L0 {r.final.get('l0', float('nan')):.1f}, live per group {live}, {r.seconds:.0f}s of compute "
            f"-> {r.run_dir}",
            highlight=False,
        )
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
