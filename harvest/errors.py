"""Errors of the harvest stage, each shown to the user as one line naming the problem and the fix."""

from __future__ import annotations

from store.errors import UserError


class HarvestError(UserError):
    """A problem with the harvest's inputs (model, data set, layer) that the user can act on."""
