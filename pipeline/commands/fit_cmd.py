"""`pipeline fit`."""

from __future__ import annotations

import json

import click

from fit.config import DATA_MODES, NORMS, RECON_LOSSES, VARIANTS, TrainConfig, expand_grid
from pipeline.console import console, progress_bar
from pipeline.options import parse_storage_options, storage_option


@click.command()
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--out", required=True, help="Run directory; each SAE goes to OUT/<name>/.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(VARIANTS), default=["hier"],
              show_default=True, help="Repeatable: each variant is trained.")
@click.option("--seed", "seeds", multiple=True, type=int, default=[0], show_default=True,
              help="Weight-initialisation seed (repeatable).")
@click.option("-K", "--groups", "groups", multiple=True, type=int, default=[5], show_default=True,
              help="Number of latent groups for hier (repeatable).")
@click.option("--gamma", "gammas", multiple=True, type=float, default=[1.5], show_default=True,
              help="Penalty multiplier between groups for hier (repeatable).")
@click.option("--l1", "l1s", multiple=True, type=float, default=[0.04], show_default=True,
              help="Base L1 weight lambda (repeatable).")
@click.option("--expansion", default=1.0, show_default=True, help="Latents per input dimension.")
@click.option("--norm", type=click.Choice(NORMS), default="layer_norm", show_default=True,
              help="Encoder input normalisation.")
@click.option("--recon", type=click.Choice(RECON_LOSSES), default="mse", show_default=True,
              help="mse (squared error, the paper's) or l2 (unsquared norm).")
@click.option("--batch-size", default=2048, show_default=True)
@click.option("--lr", default=3e-4, show_default=True)
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--lr-warmup", "lr_warmup_steps", default=0, show_default=True, help="Linear lr warm-up steps.")
@click.option("--l1-warmup", "l1_warmup_steps", default=0, show_default=True, help="Linear L1 warm-up steps.")
@click.option("--tokens", type=int, default=None, help="Training tokens [one pass over the training rows].")
@click.option("--holdout", default=0.05, show_default=True, help="Fraction of contexts held out for evaluation.")
@click.option("--data-seed", default=0, show_default=True, help="Seed of the batch order (shared by all SAEs).")
@click.option("--shuffle-rows", default=65536, show_default=True, help="Streaming shuffle window in rows.")
@click.option("--data", type=click.Choice(DATA_MODES), default="auto", show_default=True,
              help="memory: load rows once and sample there; stream: read chunks as training goes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--bf16", "autocast_bf16", is_flag=True, help="bf16 autocast on CUDA.")
@click.option("--log-every", default=50, show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--no-verify-checksums", "no_verify", is_flag=True, help="Skip the crc32c check of each chunk.")
@click.option("--streams", type=int, default=None,
              help="Streams per global batch [torchrun's WORLD_SIZE, else 1]; one process with --streams G "
                   "sees the batches of a G-process job.")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def fit(store: str, out: str, variants, seeds, groups, gammas, l1s, expansion, norm, recon, no_verify,
        storage_options, as_json, **train) -> None:
    """Train SAEs from a store: every combination of the repeatable options, in one pass over the store.

    Rerunning the same command after a crash resumes; finished SAEs are skipped. Under
    `torchrun --nproc-per-node G -m pipeline fit ...` the G processes train data-parallel (DDP).
    """
    from fit.trainer import fit as run_fit

    saes = expand_grid(list(variants), list(seeds), list(groups), list(gammas), list(l1s),
                       expansion=expansion, norm=norm, recon=recon)
    cfg = TrainConfig(store=store, out=out, verify_checksums=not no_verify,
                      storage_options=parse_storage_options(storage_options), **train)
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
