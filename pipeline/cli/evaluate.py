"""`pipeline evaluate`: its options are EvaluateConfig's fields."""

from __future__ import annotations

import json

import click

from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_options
from pipeline.evaluate.config import EvaluateConfig


@click.command()
@click.argument("runs", nargs=-1, required=True)
@config_options(EvaluateConfig, exclude=("runs",), opts={"store_url": Opt(names=("--store",))})
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def evaluate(runs: tuple[str, ...], as_json: bool, **options) -> None:
    """Measure runs on their store's held-out contexts; writes RUN/eval.json.

    RUNS are run directories or folders of them.
    """
    from pipeline.evaluate.runner import evaluate as run_evaluate

    cfg = EvaluateConfig(runs=runs, **options)
    with progress_bar("evaluate", "row") as update:
        results = run_evaluate(cfg, on_progress=update)
    for r in results:
        kl = f", KL {r.kl:.4g}, CE recovered {r.ce_recovered:.3f}" if r.kl is not None else ""
        console.print(f"[green]{r.name}[/green]: MSE {r.mse:.4g}, explained variance "
                      f"{r.explained_variance:.3f}, L0 {r.l0:.1f}, active features {r.active_features}{kl}",
                      highlight=False)
        if r.absorption is not None:
            console.print(f"  absorption: {_absorption_line(r.absorption)}", highlight=False)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.to_dict().items() if not k.startswith("feature_")}
                               for r in results], indent=2))


def _absorption_line(a) -> str:
    """One line: the means, how many letters qualified, and the caveats a reader needs."""
    if a.mean_full_absorption is None:
        return f"no letter's probe is good enough (F1 > {a.min_probe_f1}) on {a.test_words} test words: use more words"
    return (f"mean full absorption {a.mean_full_absorption:.3f}, mean absorption fraction "
            f"{a.mean_absorption_fraction:.3f} over {len(a.letters)} letters (probe accuracy "
            f"{a.probe_test_accuracy:.2f}, {a.words} words)" + "".join(f"; {c}" for c in a.caveats()))
