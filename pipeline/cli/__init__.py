"""The `pipeline` command line: only commands. Each maps its options (generated from a stage's config dataclass)
onto that config and calls one stage; the stages themselves live beside this package, in pipeline/, harvest/,
fit/ and store/."""

from __future__ import annotations

import logging
import sys

import click

from pipeline.cli.console import console, setup_logging
from store.errors import UserError

log = logging.getLogger("pipeline")


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
        # Click's own usage block is three lines and says "Error: Invalid value"; ours is one line naming the option
        # and where to look, like every other user error.
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "pipeline"
        error_line(f"{exc.format_message()} (see `{command} --help`)")
        sys.exit(2)
    except UserError as exc:
        error_line(str(exc))
        sys.exit(2)


def error_line(message: str) -> None:
    """The one line every user error ends with."""
    console.print(f"[bold red]error:[/bold red] {' '.join(message.split())}", highlight=False, soft_wrap=True)


from pipeline.cli import browse, demo, evaluate, experiment, fit, harvest, report, store, synth  # noqa: E402

cli.add_command(harvest.harvest)
cli.add_command(synth.synth)
cli.add_command(store.store)
cli.add_command(demo.demo_assets)
cli.add_command(fit.fit)
cli.add_command(evaluate.evaluate)
cli.add_command(report.report)
cli.add_command(experiment.experiment)
cli.add_command(browse.browse)
