"""`pipeline fit`: its options are TrainConfig's and SAEConfig's fields (the SAE fields that span a grid repeat)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from fit.architectures import ARCH_FIELDS, variant
from fit.config import (
    DATA_MODES,
    GRID_AXES,
    NORMS,
    RECON_LOSSES,
    SPARSE_MODES,
    TRACKERS,
    VARIANTS,
    SAEConfig,
    TrainConfig,
    expand_grid,
)
from harvest.synthetic.config import SAMPLERS, StreamConfig
from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_kwargs, config_options, given_on_command_line, help_text
from store.configs import option_name


def _defaults_help(name: str) -> str:
    """Each variant's default of an architecture field, from its fields class (fit/architectures/)."""
    by_value: dict[str, list[str]] = {}
    for v in VARIANTS:
        if name in variant(v).uses:
            value = variant(v).defaults()[name]
            by_value.setdefault(repr(value) if value != () else "none", []).append(v)
    return "; ".join(f"{value} ({', '.join(vs)})" for value, vs in by_value.items())


def _sae_options() -> dict[str, Opt]:
    flags = {"groups": ("-K", "--groups")}
    opts = {axis: Opt(names=flags.get(axis, (option_name(axis),)), multiple=True) for axis in GRID_AXES}
    opts["variant"] = Opt(names=("--variant",), multiple=True, choices=VARIANTS)
    opts["prefixes"] = Opt(names=("--prefixes",), metavar="END")
    opts.update(norm=Opt(choices=NORMS), recon=Opt(choices=RECON_LOSSES))
    docs = help_text(SAEConfig)
    for name in ARCH_FIELDS:  # their defaults are each variant's own
        opts[name] = replace(opts.get(name, Opt()), help=f"{docs[name]} Default: {_defaults_help(name)}.")
    return opts


SAE_OPTIONS = _sae_options()
"""The SAE grid: every combination of the repeatable options (fit.config.GRID_AXES) is trained (an option a variant
does not take, such as --k for hier or --l1 for topk, does not multiply that variant)."""

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


STREAM_OPTIONS = {"synthetic": Opt(metavar="PRESET|FILE"), "sampler": Opt(choices=SAMPLERS)}
STREAM_STORE = Opt(default=None)
"""--store is optional beside --synthetic (train_config fills it in)."""


def fit_options(command):
    """Every option of one training pass: the store (optional beside --synthetic) and run directory, the pass, and
    the SAE grid."""
    command = config_options(SAEConfig, opts=SAE_OPTIONS)(command)
    return config_options(TrainConfig, opts={**TRAIN_OPTIONS, "store": STREAM_STORE})(command)


def train_config(train: dict, stream: StreamConfig | None = None) -> TrainConfig:
    """The pass of these TrainConfig keyword arguments; with a synthetic stream, its store defaults to
    OUT/heldout.zarr, where the stream's held-out rows go."""
    if train["store"] is None:
        if stream is None or stream.synthetic is None:
            raise click.UsageError("Missing option '--store' (or --synthetic PRESET|FILE).")
        train["store"] = str(Path(train["out"]) / "heldout.zarr")
    return TrainConfig(**train)


def check_options_apply(variants: list[str] | tuple[str, ...], given: set[str]) -> None:
    """Refuse an architecture option typed on the command line that none of the variants asked for uses (it would be
    ignored: `--variant baseline --prefixes 100`), naming the variants that do use it."""
    for name in ARCH_FIELDS:
        if name not in given:
            continue
        if not any(name in variant(v).uses for v in variants):
            users = [v for v in VARIANTS if name in variant(v).uses]
            flags = "/".join(SAE_OPTIONS[name].names) or option_name(name)
            raise click.UsageError(f"{flags} applies to none of the variants asked "
                                   f"for ({', '.join(variants)}): it sets {', '.join(users)}.")


def sae_grid(values: dict) -> list[SAEConfig]:
    """The SAEs the grid options ask for (taken out of ``values``)."""
    check_options_apply(values["variant"], given_on_command_line())
    sae = config_kwargs(SAEConfig, values)
    return expand_grid({axis: [v for v in sae.pop(axis) if v is not None] for axis in GRID_AXES}, **sae)


def stream_config(values: dict) -> StreamConfig:
    """The synthetic stream the options ask for (taken out of ``values``); a stream option without --synthetic is
    refused."""
    stream = StreamConfig(**config_kwargs(StreamConfig, values))
    unused = sorted(given_on_command_line() & set(StreamConfig.__dataclass_fields__) - {"synthetic"})
    if stream.synthetic is None and unused:
        raise click.UsageError(f"{option_name(unused[0])} applies only with --synthetic PRESET|FILE.")
    return stream


def stream_source(stream: StreamConfig, cfg: TrainConfig):
    """The synthetic stream's rows for the pass (its held-out store written first), or None to read cfg.store."""
    if stream.synthetic is None:
        return None
    from pipeline.synthetic_source import synthetic_source
    from store.device import resolve_device

    with progress_bar("held-out rows", "row") as rows, progress_bar("synthetic model: orthogonalise", "step") as build:
        return synthetic_source(stream, cfg.store, resolve_device(cfg.device), cfg.storage_options,
                                on_progress=rows, on_build=build)


@click.command()
@fit_options
@config_options(StreamConfig, opts=STREAM_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def fit(as_json: bool, **values) -> None:
    """Train SAEs from a store: every combination of the repeatable options, in one pass over the store.

    With --synthetic PRESET|FILE the rows are generated on the fit's device from a synthetic model's stream instead
    (--tokens of them), and its held-out rows written to --store first. Rerunning the same command after a crash
    resumes; finished SAEs are skipped. Under `torchrun --nproc-per-node G -m pipeline fit ...` the G processes
    train data-parallel (DDP).
    """
    from fit.trainer import fit as run_fit

    stream = stream_config(values)
    saes = sae_grid(values)
    cfg = train_config(config_kwargs(TrainConfig, values), stream)
    with progress_bar("fit", "step") as update:
        results = run_fit(cfg, saes, on_step=update, source=stream_source(stream, cfg))
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
