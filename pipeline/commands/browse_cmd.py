"""`pipeline browse`."""

from __future__ import annotations

import click

from pipeline.console import console, progress_bar


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", required=True, help="Site folder (a previous site there is replaced).")
@click.option("--store", "store_url", default=None, help="Store to read [the one each run was trained on].")
@click.option("--model", default=None, help="LM (hub id or folder) for promoted/suppressed tokens (logit lens).")
@click.option("--store-model", is_flag=True, help="Use the store's own model for the logit lens.")
@click.option("--tokenizer", default=None, help="Tokenizer for the contexts [--model's, else the store's].")
@click.option("--k", default=20, show_default=True, help="Top activating examples per feature.")
@click.option("--before", default=24, show_default=True, help="Tokens shown before an activating token.")
@click.option("--after", default=8, show_default=True, help="Tokens shown after it.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the random lower-quantile examples.")
def browse(runs: tuple[str, ...], out, store_url, model, store_model, tokenizer, k, before, after, device,
           seed) -> None:
    """A static feature browser for runs (run directories or folders of them), from one pass over the held-out
    rows of their store. Open OUT/index.html in a browser, or serve OUT with `python -m http.server`."""
    from pipeline.browse.builder import build_site
    from pipeline.browse.config import BrowseConfig

    cfg = BrowseConfig(runs=runs, out=out, store_url=store_url, model=model, store_model=store_model,
                       tokenizer=tokenizer, k=k, before=before, after=after, device=device, seed=seed)
    with progress_bar("browse", "row") as update:
        index = build_site(cfg, on_progress=update)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    console.print(f"[green]wrote {index}[/green] ({size / 1e6:.1f} MB)", highlight=False)
