"""Errors of the fit stage, each shown to the user as one line naming the problem and the fix."""

from __future__ import annotations

from store.errors import UserError


class FitError(UserError):
    """A problem with the fit's inputs (store, run directory, batches) that the user can act on."""
