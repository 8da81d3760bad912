"""Errors raised by the activation store.

Every error is meant to be shown to a user as one line: it names the problem and, where there is one, the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """The one base of every error a user can act on, in every stage.

    It lives here because every package depends on ``store`` and nothing else is shared by all of them. The
    CLI catches this one type and prints its message as one line; anything else is a bug and keeps its
    traceback.
    """


class StoreError(UserError):
    """A problem with an activation store that the user can act on."""


class StoreNotFoundError(StoreError):
    """No store exists at the given location."""


class IncompleteStoreError(StoreError):
    """The store's harvest has not finished (or was interrupted)."""


class StoreMismatchError(StoreError):
    """An existing store was made with other settings than the ones asked for."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class CorruptStoreError(StoreError):
    """A chunk or an attribute of the store does not read back as written."""


class UnsealedStoreError(StoreError):
    """A complete store without a manifest (finalised by an older version, or its seal removed)."""
