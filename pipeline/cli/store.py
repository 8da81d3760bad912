"""`pipeline store list | info | verify | finalize`."""

from __future__ import annotations

import json

import click
from rich.table import Table

from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import parse_storage_options, storage_option


@click.group()
def store() -> None:
    """Inspect, check and finalize activation stores."""


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def store_summary(url: str, storage_options: dict, partial: bool) -> dict:
    from store.reader import open_store

    st = open_store(url, partial=partial, storage_options=storage_options, allow_unsealed=True)
    m = st.meta
    moments = st.moments()
    return {
        "store": url,
        "complete": m.complete,
        "model": m.model.name,
        "model_revision": m.model.revision,
        "architecture": m.model.architecture,
        "layer": m.layer,
        "hook_point": m.hook_point,
        "d_model": m.d_model,
        "dtype": m.dtype,
        "compute_dtype": m.compute_dtype,
        "tokens": st.n_rows,
        "tokens_requested": m.tokens_requested,
        "contexts": st.n_contexts,
        "context_length": m.context.length,
        "include_bos": m.context.include_bos,
        "dataset": m.dataset.name if not m.dataset.data_files
        else f"{m.dataset.name}: {', '.join(m.dataset.data_files)}",
        "dataset_config": m.dataset.config,
        "split": m.dataset.split,
        "chunk_rows": m.chunk_rows,
        "chunks": st.n_chunks,
        "activation_bytes": st.n_rows * m.d_model * 2,
        "mean_norm_sq": float((moments.var + moments.mean**2).sum()),
        "mean_var_per_dim": float(moments.var.mean()),
        "harvest_seconds": m.harvest_seconds,
        "format_version": m.format_version,
        "sealed": st.manifest is not None,
        "created_at": m.created_at,
    }


@store.command()
@click.argument("path")
@click.option("--partial", is_flag=True, help="Describe an incomplete store's written rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")
@storage_option
def info(path: str, partial: bool, as_json: bool, storage_options: tuple[str, ...]) -> None:
    """Summarise a store: model, layer, data, size, statistics."""
    summary = store_summary(path, parse_storage_options(storage_options), partial)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"activation store {path}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    rows = [
        ("status", "complete" if summary["complete"] else "[yellow]INCOMPLETE[/yellow]"),
        ("model", f"{summary['model']} ({summary['architecture']})"
                  + (f" @ {summary['model_revision'][:12]}" if summary["model_revision"] else "")),
        ("layer", f"{summary['layer']} ({summary['hook_point']} output)"),
        ("d_model", str(summary["d_model"])),
        ("dtype", f"{summary['dtype']} on disk, computed in {summary['compute_dtype']}"),
        ("tokens", f"{summary['tokens']:,}" + ("" if summary["tokens"] == summary["tokens_requested"]
                                              else f" (asked for {summary['tokens_requested']:,})")),
        ("contexts", f"{summary['contexts']:,} of {summary['context_length']} tokens, BOS "
                     + ("stored" if summary["include_bos"] else "not stored")),
        ("dataset", f"{summary['dataset']} [{summary['split']}]"
                    + (f" config {summary['dataset_config']}" if summary["dataset_config"] else "")),
        ("chunks", f"{summary['chunks']:,} x {summary['chunk_rows']:,} rows"),
        ("activations", _human_bytes(summary["activation_bytes"])),
        ("mean ||x||^2", f"{summary['mean_norm_sq']:.4g}"),
        ("mean variance per dim", f"{summary['mean_var_per_dim']:.4g}"),
        ("harvest time", f"{summary['harvest_seconds']:.0f} s"),
        ("format", f"v{summary['format_version']}, created {summary['created_at']}, "
                   + ("sealed" if summary["sealed"] else "[yellow]not sealed[/yellow]")),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@store.command("list")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")
@storage_option
def list_(url: str, as_json: bool, storage_options: tuple[str, ...]) -> None:
    """List the stores under a folder or an s3:// (or other fsspec) prefix: model, layer, tokens, data set, state,
    size and the version that wrote each; a store that cannot be read is a row naming why."""
    from store.catalog import list_stores

    entries = list_stores(url, parse_storage_options(storage_options))
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        console.print(f"no stores under {url}", highlight=False)
        return
    table = Table(title=f"{len(entries)} store(s) under {url}", title_justify="left")
    for column in ("store", "state", "model", "layer", "tokens", "data set", "size", "written by"):
        table.add_column(column, overflow="fold")
    colour = {"complete": "green", "growing": "cyan", "unfinished": "yellow", "unreadable": "red"}
    for e in entries:
        state = f"[{colour[e.state]}]{e.state}[/{colour[e.state]}]"
        size = "–" if e.size_bytes is None else _human_bytes(e.size_bytes)
        if e.problem is not None:
            table.add_row(e.name, state, "–", "–", "–", "–", size, "–")
            continue
        tokens = f"{e.tokens:,}" + ("" if e.tokens == e.tokens_requested else f" of {e.tokens_requested:,}")
        model = e.model + (f" @ {e.revision[:12]}" if e.revision else "")
        table.add_row(e.name, state, model, "–" if e.layer is None else str(e.layer), tokens, e.dataset, size,
                      e.written_by)
    console.print(table)
    for e in entries:
        if e.problem is not None:
            console.print(f"[red]unreadable[/red] {e.url}: {e.problem}", highlight=False)


@store.command()
@click.argument("path")
@click.option("--partial", is_flag=True, help="Check the written rows of an incomplete store.")
@click.option("--json", "as_json", is_flag=True, help="Also print the report as JSON on stdout.")
@storage_option
def verify(path: str, partial: bool, as_json: bool, storage_options: tuple[str, ...]) -> None:
    """Read every chunk of a store and check it; exits 1 when anything is wrong."""
    from store.verify import verify_store

    with progress_bar("verify", "chunk") as update:
        report = verify_store(path, partial=partial, storage_options=parse_storage_options(storage_options),
                              on_progress=update)
    for check in report.checks:
        console.print(f"[green]ok[/green]   {check}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warn[/yellow] {warning}", highlight=False)
    for error in report.errors:
        console.print(f"[red]FAIL[/red] {error}", highlight=False)
    console.print(
        f"read {report.chunks_read} chunks ({_human_bytes(report.bytes_read)}) in {report.seconds:.1f}s: "
        + ("[green]store is valid[/green]" if report.ok else f"[red]{len(report.errors)} problem(s)[/red]")
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    if not report.ok:
        raise SystemExit(1)


@store.command()
@click.argument("path")
@storage_option
@click.option("--reseal", is_flag=True, help="Seal a complete store again as it is now, whatever changed since it was "
                                             "sealed (a digest guards against accidents, not against this).")
def finalize(path: str, storage_options: tuple[str, ...], reseal: bool) -> None:
    """Merge statistics, seal and mark a sharded harvest's store complete once all shards finished; seal a store an
    older version finalised."""
    from store.finalize import finalize as finalize_store
    from store.location import StoreLocation

    finalize_store(StoreLocation(path, parse_storage_options(storage_options)), reseal=reseal)
    console.print(f"[green]{path} is complete and sealed[/green]")
