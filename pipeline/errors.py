"""Errors of the orchestration layer (demo assets, reports), shown to the user as one line."""

from __future__ import annotations

from store.errors import UserError


class PipelineError(UserError):
    """A problem the user can act on, raised by the pipeline package itself."""
