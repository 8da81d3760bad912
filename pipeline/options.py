"""Options and parsers shared by several commands."""

from __future__ import annotations

import json

import click


def parse_storage_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs (VALUE parsed as JSON when it is JSON) -> fsspec storage options."""
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--storage-option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


storage_option = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
    help="fsspec option for a remote store (repeatable), e.g. client_kwargs='{\"endpoint_url\": \"http://...\"}'.",
)
