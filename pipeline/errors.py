"""Errors of the pipeline's own stages (evaluate, report, browse, experiment, demo assets), shown as one line."""

from __future__ import annotations

from store.errors import UserError


class PipelineError(UserError):
    """A problem the user can act on, raised by the pipeline package itself."""
