"""`pipeline report` and `pipeline experiment`."""

from __future__ import annotations

import click

from pipeline.console import console, progress_bar


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, help="Report directory (report.md, results.json, PNG plots).")
def report(runs: tuple[str, ...], out: str) -> None:
    """Table 1, ablations and group analysis from evaluated runs (run directories or folders of them)."""
    from pipeline.report.report import write_report

    path = write_report(list(runs), out)
    console.print(f"[green]wrote {path}[/green]")


@click.command()
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--out", required=True, help="Run directory; the report goes to OUT/report/.")
@click.option("--seeds", default=3, show_default=True, help="Seeds of the baseline and the hierarchical SAE.")
@click.option("--ablation-seeds", default=1, show_default=True, help="Seeds of each ablation.")
@click.option("--no-ablations", is_flag=True, help="Only the two main configurations.")
@click.option("--tokens", type=int, default=None, help="Training tokens [one pass over the training rows].")
@click.option("--holdout", default=0.05, show_default=True)
@click.option("--data", default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--kl-contexts", type=int, default=None, help="At most this many held-out contexts for KL/CE.")
def experiment(store, out, seeds, ablation_seeds, no_ablations, tokens, holdout, data, device, kl_contexts) -> None:
    """The paper's grid on a store: baseline and hier x seeds, plus the K, gamma and lambda ablations, all in one
    pass over the store; then evaluation and the report."""
    from fit.config import TrainConfig
    from pipeline.experiment import Grid, run_experiment

    grid = Grid(seeds=seeds, ablation_seeds=ablation_seeds, ablations=not no_ablations)
    train = TrainConfig(store=store, out=out, tokens=tokens, holdout=holdout, data=data, device=device)
    console.print(f"training {len(grid.saes())} SAEs in one pass: {', '.join(s.name for s in grid.saes())}")
    with progress_bar("fit", "step") as fit_update, progress_bar("evaluate", "row") as eval_update:
        path = run_experiment(train, grid, kl_contexts=kl_contexts, on_step=fit_update,
                              on_eval=lambda d, t, what: eval_update(d, t, what))
    console.print(f"[green]wrote {path}[/green]")
