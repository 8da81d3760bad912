"""`pipeline report`."""

from __future__ import annotations

import click

from pipeline.cli.console import console


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, help="Report directory (report.md, results.json, PNG plots).")
def report(runs: tuple[str, ...], out: str) -> None:
    """Table 1, ablations and group analysis from evaluated runs (run directories or folders of them)."""
    from pipeline.report.report import write_report

    path = write_report(list(runs), out)
    console.print(f"[green]wrote {path}[/green]")
