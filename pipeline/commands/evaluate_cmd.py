"""`pipeline evaluate`."""

from __future__ import annotations

import json

import click

from pipeline.console import console, progress_bar


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--store", "store_url", default=None, help="Store to evaluate on [the one each run was trained on].")
@click.option("--model", default=None, help="LM for the spliced KL/CE [the store's model].")
@click.option("--no-kl", is_flag=True, help="Skip the LM forward passes (KL and CE).")
@click.option("--kl-contexts", type=int, default=None, help="At most this many held-out contexts for KL/CE.")
@click.option("--batch-contexts", default=2, show_default=True, type=click.IntRange(1),
              help="Contexts per LM forward pass.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def evaluate(runs: tuple[str, ...], store_url, model, no_kl, kl_contexts, batch_contexts, device, as_json) -> None:
    """Measure runs on their store's held-out contexts; writes RUN/eval.json.

    RUNS are run directories or folders of them.
    """
    from pipeline.evaluate.runner import evaluate as run_evaluate

    with progress_bar("evaluate", "row") as update:
        results = run_evaluate(list(runs), store_url=store_url, model=model, kl=not no_kl, kl_contexts=kl_contexts,
                               batch_contexts=batch_contexts, device=device,
                               on_progress=lambda done, total, what: update(done, total, what))
    for r in results:
        kl = f", KL {r['kl']:.4g}, CE recovered {r['ce_recovered']:.3f}" if "kl" in r else ""
        console.print(f"[green]{r['name']}[/green]: MSE {r['mse']:.4g}, explained variance "
                      f"{r['explained_variance']:.3f}, L0 {r['l0']:.1f}, active features {r['active_features']}{kl}",
                      highlight=False)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if not k.startswith("feature_")} for r in results],
                              indent=2))
