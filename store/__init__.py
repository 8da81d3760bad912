"""The activation store: a chunked Zarr v3 group of LM activations, token ids and running statistics.

The format is specified in docs/store-format.md. Write through :class:`store.writer.StoreWriter`, read through
:func:`store.reader.open_store`; both take a local path or any fsspec URL.
"""

from store.errors import (
    CorruptStoreError,
    IncompleteStoreError,
    StoreError,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
)
from store.format import FORMAT_VERSION, StoreMeta
from store.reader import ActivationStore, open_store

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "CorruptStoreError",
    "IncompleteStoreError",
    "StoreError",
    "StoreLockedError",
    "StoreMeta",
    "StoreMismatchError",
    "StoreNotFoundError",
    "open_store",
]
