"""`pipeline browse`: its options are BrowseConfig's fields."""

from __future__ import annotations

import click

from pipeline.browse.config import BrowseConfig
from pipeline.cli.console import console, progress_bar
from pipeline.cli.options import Opt, config_options

BROWSE_OPTIONS = {"store_url": Opt(names=("--store",))}


@click.command()
@click.argument("runs", nargs=-1, required=True)
@config_options(BrowseConfig, exclude=("runs", "quantiles"), opts=BROWSE_OPTIONS)
def browse(runs: tuple[str, ...], **options) -> None:
    """A static feature browser for runs (run directories or folders of them), from one pass over the held-out
    rows of their store. Open OUT/index.html in a browser, or serve OUT with `python -m http.server`."""
    from pipeline.browse.builder import build_site

    cfg = BrowseConfig(runs=runs, **options)
    with progress_bar("browse", "row") as update:
        index = build_site(cfg, on_progress=update)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    console.print(f"[green]wrote {index}[/green] ({size / 1e6:.1f} MB)", highlight=False)
