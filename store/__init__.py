"""The activation store: a chunked Zarr v3 group of LM activations, token ids and running statistics.

The format is specified in docs/store-format.md. Write through :class:`store.writer.StoreWriter`, read through
:func:`store.reader.open_store`; both take a local path or any fsspec URL. The package imports none of its
modules, so that each may import its siblings without an import cycle.
"""
