"""python -m benchmarks [--only harvest,store] [--out bench-results.json] (`make bench`), from the repository root."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from benchmarks.common import BenchReport, machine_info
from pipeline.cli.console import console, setup_logging

SECTIONS = ("startup", "harvest", "store", "seal", "fit", "s3", "peers", "sparse", "synthetic")


@click.command()
@click.option("--only", default=",".join(SECTIONS), show_default=True, help="Comma-separated sections to run.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results.json"), show_default=True)
@click.option("--workdir", default=None, help="Where temporary stores go (default: the system temp dir).")
@click.option("--device", default="cpu", show_default=True, help="Where the sparse and peers sections train.")
def main(only: str, out: Path, workdir: str | None, device: str) -> None:
    setup_logging(0)
    report = BenchReport(machine=machine_info())
    for section in only.split(","):
        if section == "startup":
            from benchmarks import startup_bench

            startup_bench.run(report)
        elif section == "harvest":
            from benchmarks import harvest_bench

            harvest_bench.run(report, workdir=workdir)
        elif section == "store":
            from benchmarks import store_bench

            store_bench.run(report, workdir=workdir)
        elif section == "seal":
            from benchmarks import seal_bench

            seal_bench.run(report, workdir=workdir)
        elif section == "fit":
            from benchmarks import fit_bench

            fit_bench.run(report, workdir=workdir)
        elif section == "s3":
            from benchmarks import s3_bench

            s3_bench.run(report, workdir=workdir)
        elif section == "peers":
            from benchmarks import peer_bench

            peer_bench.run(report, device=device, workdir=workdir)
        elif section == "sparse":
            from benchmarks import sparse_bench

            sparse_bench.run(report, device=device)
        elif section == "synthetic":
            from benchmarks import synthetic_bench

            synthetic_bench.run(report, workdir=workdir)
        else:
            raise click.BadParameter(f"unknown section {section!r}; choose from {', '.join(SECTIONS)}")
    table = Table(title="benchmarks (ratios measured back to back in this run)", title_justify="left")
    for col in ("figure", "ours", "baseline", "ratio", "target", "baseline is", "note"):
        table.add_column(col, overflow="fold")
    for f in report.figures:
        verdict = "" if f.target is None else (f"[green]>= {f.target}[/green]" if f.meets_target
                                               else f"[red]< {f.target}[/red]")
        table.add_row(f.name, f"{f.ours:,.3g} {f.unit}", f"{f.baseline:,.3g} {f.unit}", f"{f.ratio:.2f}", verdict,
                      f.baseline_name, f.note)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]")
    report.write(out)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
