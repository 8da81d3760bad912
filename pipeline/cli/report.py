"""`pipeline report`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.console import console


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, help="Report directory (report.md, results.json, claims.json, PNG plots).")
@click.option("--readme", default=None, help="Also rewrite this README's findings block (between its marker "
                                              "lines) from the claims table.")
def report(runs: tuple[str, ...], out: str, readme: str | None) -> None:
    """The paper's claims, Table 1, matched-sparsity frontiers, ablations and group analysis from evaluated runs
    (run directories or folders of them); prints the claims table."""
    from pipeline.report.claims import Findings, render_findings
    from pipeline.report.report import write_report

    path = write_report(list(runs), out, readme=readme)
    findings = Findings.from_dict(json.loads((Path(out) / "claims.json").read_text()))
    click.echo(render_findings(findings))
    console.print(f"[green]wrote {path}[/green]" + (f" and the findings block of {readme}" if readme else ""))
