"""Stores written straight through the store API (no LM), for store and fit tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from store import dtypes
from store.format import ContextInfo, DatasetInfo, ModelInfo, StoreMeta, TokenizerInfo
from store.location import StoreLocation
from store.sink import ChunkSink
from store.writer import StoreWriter


def make_meta(n_rows: int = 1000, d: int = 8, chunk_rows: int = 128, ctx: int = 16, **overrides) -> StoreMeta:
    meta = StoreMeta(
        model=ModelInfo("api-written", None, "None", 4, d, 100, "f" * 16),
        tokenizer=TokenizerInfo("api-written", 2, 1, 0, 100),
        dataset=DatasetInfo("json", None, "train", "text", ["api-written.jsonl"]),
        context=ContextInfo(ctx, False),
        layer=2, hook_point="model.layers.2", d_model=d, dtype="bfloat16", compute_dtype="float32",
        n_rows=n_rows, tokens_requested=n_rows, chunk_rows=chunk_rows,
    )
    return dataclasses.replace(meta, **overrides)


def random_rows(n_rows: int, d: int, seed: int = 0) -> torch.Tensor:
    """Rows with a few structured directions plus noise, roughly like residual activations."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(3 * d, d, generator=g)
    codes = torch.relu(torch.randn(n_rows, 3 * d, generator=g) - 1.0)
    return codes @ basis + 0.1 * torch.randn(n_rows, d, generator=g) + 2.0


def write_store(url: str, meta: StoreMeta, acts_ND: torch.Tensor, *, stop_row: int | None = None,
                storage_options: dict | None = None) -> StoreWriter:
    """Write rows [resume, stop_row) of ``acts_ND``; finishes (and finalizes) when stop_row is None."""
    writer = StoreWriter.open(StoreLocation(url, storage_options or {}), meta)
    raw = dtypes.encode(acts_ND, meta.dtype)
    tokens = (np.arange(meta.n_rows) * 7 % 100).astype(np.int32)
    sink = ChunkSink(writer)
    end = meta.n_rows if stop_row is None else stop_row
    for s in range(writer.resume_row, end, 100):
        e = min(s + 100, end)
        sink.put(s, raw[s:e], tokens[s:e])
    sink.close()
    if stop_row is None:
        writer.finish()
    else:
        writer.close()
    return writer
