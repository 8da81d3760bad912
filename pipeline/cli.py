"""The `pipeline` command line. Each command maps its options onto a typed config and calls one stage."""

from __future__ import annotations

import logging
import sys

import click

from harvest.errors import HarvestError
from pipeline.console import console, setup_logging
from store.errors import StoreError

log = logging.getLogger("pipeline")

USER_ERRORS: tuple[type[Exception], ...] = (StoreError, HarvestError, click.ClickException)


def _user_errors() -> tuple[type[Exception], ...]:
    errors = list(USER_ERRORS)
    try:
        from fit.errors import FitError

        errors.append(FitError)
    except ImportError:  # fit stage not installed
        pass
    try:
        from pipeline.errors import PipelineError

        errors.append(PipelineError)
    except ImportError:
        pass
    return tuple(errors)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Harvest LM activations into a shared Zarr store; train and evaluate SAEs from it."""
    setup_logging(-1 if quiet else verbose)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: rerun the same command to resume where it stopped[/yellow]")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except _user_errors() as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


from pipeline.commands import browse_cmd, demo_cmd, evaluate_cmd, fit_cmd, harvest_cmd, report_cmd, store_cmd  # noqa: E402

cli.add_command(harvest_cmd.harvest)
cli.add_command(store_cmd.store)
cli.add_command(demo_cmd.demo_assets)
cli.add_command(fit_cmd.fit)
cli.add_command(evaluate_cmd.evaluate)
cli.add_command(report_cmd.report)
cli.add_command(report_cmd.experiment)
cli.add_command(browse_cmd.browse)
