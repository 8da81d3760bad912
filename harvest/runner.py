"""The harvest loop: contexts -> truncated forward pass -> rows -> background store writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice

import numpy as np
import torch

from harvest.config import HarvestConfig
from harvest.data import Context, ContextStream, DataSource
from harvest.digest import local_name, model_weights_digest
from harvest.errors import HarvestError
from harvest.lm import (
    LayerCapture,
    check_context_length,
    check_layer,
    load_model,
    load_tokenizer,
    model_info,
    resolve_compute_dtype,
    special_tokens,
    tokenizer_info,
)
from store import dtypes
from store.background import Background
from store.device import resolve_device
from store.finalize import finalize
from store.format import ContextInfo, StoreMeta, ceil_div, default_chunk_rows
from store.location import StoreLocation
from store.sink import ChunkSink
from store.writer import StoreWriter

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as (rows produced so far, rows this run has to produce)."""


@dataclass(frozen=True)
class HarvestResult:
    store: str
    rows_written: int
    """Rows this run wrote (fewer than the store holds when it resumed)."""
    resumed_at_row: int
    complete: bool
    seconds: float
    """Wall-clock time of the whole call, model loading included."""
    loop_seconds: float = 0.0
    """Time from the first forward pass until every row was written: what tokens/s is measured over."""

    @property
    def tokens_per_second(self) -> float:
        return self.rows_written / self.loop_seconds if self.loop_seconds > 0 else 0.0


def default_batch_size(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def build_meta(cfg: HarvestConfig, model, tokenizer, source: DataSource, compute_dtype: torch.dtype,
               batch_size: int) -> StoreMeta:
    # A local model is named by its absolute path, so that `./m` and `/abs/m` are one model on resume, and known
    # by its content, so that another model put at the same path is not.
    name = local_name(cfg.model)
    info = model_info(model, name, model_weights_digest(cfg.model))
    from importlib.metadata import version

    return StoreMeta(
        model=info,
        tokenizer=tokenizer_info(tokenizer, name),
        dataset=source.info(),
        context=ContextInfo(length=cfg.context_length, include_bos=cfg.include_bos),
        layer=cfg.layer,
        hook_point=LayerCapture(model, cfg.layer).hook_point,
        d_model=info.d_model,
        dtype=cfg.store_dtype,
        compute_dtype=str(compute_dtype).removeprefix("torch."),
        n_rows=cfg.tokens,
        tokens_requested=cfg.tokens,
        chunk_rows=cfg.chunk_rows or default_chunk_rows(info.d_model),
        num_shards=cfg.num_shards,
        # Per-process settings (shard index, credentials) stay out: every shard must write the same attributes.
        harvest_config={**{k: v for k, v in vars(cfg).items() if k not in {"storage_options", "shard"}},
                        "batch_size": batch_size},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        software={p: version(p) for p in ("torch", "transformers", "datasets", "zarr")},
    )


def harvest(cfg: HarvestConfig, on_progress: ProgressCallback | None = None) -> HarvestResult:
    """Run (or resume) a harvest; returns when this shard is written and, if it was the last, finalized."""
    started = time.monotonic()
    location = StoreLocation(cfg.store, cfg.storage_options)
    device = resolve_device(cfg.device)
    compute_dtype = resolve_compute_dtype(cfg.compute_dtype, device)
    source = DataSource.from_config(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.revision)
    special = special_tokens(tokenizer, cfg.model)
    contexts = iter(ContextStream(source.texts(), tokenizer, cfg.context_length, bos_id=special.bos,
                                  eos_id=special.eos, pad_id=special.pad))
    first = next(contexts, None)  # an empty data set fails here, before anything is created
    if first is None:
        raise HarvestError(f"data set '{cfg.dataset}' (split '{source.split}') holds no text: nothing to harvest")
    log.info("loading %s on %s (%s)", cfg.model, device, str(compute_dtype).removeprefix("torch."))
    model = load_model(cfg.model, cfg.revision, device, compute_dtype)
    check_layer(model, cfg.layer, cfg.model)
    check_context_length(model, cfg.context_length, cfg.model)
    meta = build_meta(cfg, model, tokenizer, source, compute_dtype, cfg.batch_size or default_batch_size(device))

    writer = StoreWriter.open(location, meta, shard=cfg.shard)
    if writer.done:
        writer.close()
        # Also on a complete store: finalize then finishes the tidy-up a killed finalisation left undone.
        complete = finalize(location, missing_ok=True)
        log.info("%s: this %s is already written; nothing to do", location, "store" if complete else "shard")
        return HarvestResult(cfg.store, 0, 0, complete, time.monotonic() - started)
    resumed_at = writer.resume_row
    loop_started = time.monotonic()
    try:
        rows_written = _run(cfg, writer, model, _chain(first, contexts), device, on_progress)
        loop_seconds = time.monotonic() - loop_started
        complete = writer.finish()
    finally:
        writer.close()
    return HarvestResult(cfg.store, rows_written, resumed_at, complete, time.monotonic() - started, loop_seconds)


def _chain(first: Context, rest: Iterator[Context]) -> Iterator[Context]:
    yield first
    yield from rest


@dataclass(frozen=True)
class ShardPlan:
    """The rows this run writes, and the grid of context batches that produces them."""

    start_row: int
    """The first row still to write (resume point)."""
    end_row: int
    """One past the last row this shard owns."""
    context: ContextInfo
    batch: int
    """Contexts per forward pass."""
    first_context: int
    """The first context of the first batch run (on the grid, so possibly before ``start_row``'s)."""
    stop_context: int
    """One past the last context of the last batch run."""

    @classmethod
    def of(cls, writer: StoreWriter) -> ShardPlan:
        meta = writer.meta
        batch = meta.harvest_config["batch_size"]
        needed = meta.context.contexts_between(writer.resume_row, writer.end_row)
        # Batches sit on a fixed grid of `batch` contexts so that a resumed or sharded run feeds the model exactly
        # the batches an uninterrupted single run would, and so stores the same floats.
        return cls(
            start_row=writer.resume_row, end_row=writer.end_row, context=meta.context, batch=batch,
            first_context=(needed.start // batch) * batch,
            stop_context=min(ceil_div(needed.stop, batch) * batch, meta.n_contexts),
        )

    @property
    def todo(self) -> int:
        return self.end_row - self.start_row

    def batch_starts(self) -> range:
        return range(self.first_context, self.stop_context, self.batch)

    def contexts_in_batch(self, first_context: int) -> int:
        return min(self.batch, self.stop_context - first_context)

    def rows_of(self, c: Context) -> int:
        """Rows that context ``c`` stores (fewer when the data set ended inside it)."""
        if c.n_real == self.context.length:
            return self.context.rows_per_context
        return c.n_real - self.context.first_position

    def end_of(self, c: Context | None) -> int:
        """The row after the last row context ``c`` stores (0 for no context)."""
        return 0 if c is None else c.index * self.context.rows_per_context + self.rows_of(c)

    def rows_to_write(self, first_context: int, n_valid: int) -> tuple[int, int]:
        """Of a batch's ``n_valid`` rows (offsets from its first row), the range [lo, hi) this run writes."""
        base = first_context * self.context.rows_per_context
        return max(self.start_row - base, 0), min(self.end_row - base, n_valid)


def _run(
    cfg: HarvestConfig,
    writer: StoreWriter,
    model,
    contexts: Iterator[Context],
    device: torch.device,
    on_progress: ProgressCallback | None,
) -> int:
    """Write this shard's rows from ``contexts``; returns the rows written."""
    plan = ShardPlan.of(writer)
    _log_start(cfg, writer, plan)
    sink = ChunkSink(writer)
    seen = _LastSeen(contexts)
    try:
        with Background((c for c in seen if c.index >= plan.first_context), 16, "contexts") as source:
            produced, data_end = _write_batches(cfg, plan, LayerCapture(model, cfg.layer), source, seen, sink,
                                                device, on_progress)
        _end(cfg, plan, writer, sink, data_end)
    except BaseException:
        # Keep what is already complete: the chunks queued before the failure are written and committed.
        try:
            sink.close()
        except Exception as exc:  # the original error matters more
            log.debug("writer also failed while closing: %s", exc)
        raise
    return produced


def _log_start(cfg: HarvestConfig, writer: StoreWriter, plan: ShardPlan) -> None:
    if plan.start_row:
        log.info("resuming %s at row %d (context %d)", writer.location, plan.start_row,
                 plan.context.context_of_row(plan.start_row))
    log.info(
        "harvesting %s layer %d -> %s: rows %d..%d in contexts of %d, %d contexts per batch",
        cfg.model, cfg.layer, writer.location, plan.start_row, plan.end_row, cfg.context_length, plan.batch,
    )


def _write_batches(cfg: HarvestConfig, plan: ShardPlan, capture: LayerCapture, source: Iterator[Context],
                   seen: _LastSeen, sink: ChunkSink, device: torch.device,
                   on_progress: ProgressCallback | None) -> tuple[int, int | None]:
    """Run the batches of the plan. Returns the rows written and, when the data set ran out, the row after its
    last token (else None)."""
    produced = 0
    for first_context in plan.batch_starts():
        want = plan.contexts_in_batch(first_context)
        group = list(islice(source, want))
        if not group:
            return produced, plan.end_of(seen.last)
        n_valid = (len(group) - 1) * plan.context.rows_per_context + plan.rows_of(group[-1])
        lo, hi = plan.rows_to_write(first_context, n_valid)
        if hi > lo:
            produced += _write_batch(cfg, plan, capture, sink, group, first_context, (lo, hi), device)
            if on_progress is not None:
                on_progress(produced, plan.todo)
        if len(group) < want or group[-1].n_real < cfg.context_length:
            return produced, first_context * plan.context.rows_per_context + n_valid
    return produced, None


def _write_batch(cfg: HarvestConfig, plan: ShardPlan, capture: LayerCapture, sink: ChunkSink, group: list[Context],
                 first_context: int, rows: tuple[int, int], device: torch.device) -> int:
    """One forward pass over a batch of contexts; queues rows [lo, hi) of its flattened rows. Returns hi - lo."""
    ids_CT = torch.from_numpy(np.stack([c.tokens for c in group])).to(device)
    try:
        acts_CTD = capture(ids_CT)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        # CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError "DefaultCPUAllocator: can't allocate".
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
            raise
        raise HarvestError(
            f"out of memory running {len(group)} contexts of {cfg.context_length} tokens on {device}; rows before "
            f"context {first_context} are kept: rerun with a smaller --batch-size or --ctx and a new --store (a store "
            "keeps the batch size it started with)"
        ) from None
    first_pos = plan.context.first_position
    # Row r of the flattened batch is store row first_row + r.
    first_row = first_context * plan.context.rows_per_context
    acts_BD = acts_CTD[:, first_pos:].reshape(-1, acts_CTD.shape[-1])
    tokens_B = ids_CT[:, first_pos:].reshape(-1)
    lo, hi = rows
    block_BD = acts_BD[lo:hi]
    _check_finite(block_BD, cfg, first_row + lo, plan.context.rows_per_context)
    sink.put(first_row + lo, dtypes.encode(block_BD, cfg.store_dtype), tokens_B[lo:hi].cpu().numpy().astype(np.int32))
    return hi - lo


def _end(cfg: HarvestConfig, plan: ShardPlan, writer: StoreWriter, sink: ChunkSink, data_end: int | None) -> None:
    """Write what is queued; when the data set ran out, end the store at its last token."""
    if data_end is None or data_end >= plan.end_row:
        sink.close()
        return
    log.warning("the data set ran out at row %d, before the %d tokens asked for", data_end, cfg.tokens)
    if data_end <= plan.start_row:
        sink.close()
        writer.mark_exhausted(data_end)
    else:
        sink.flush_partial()


class _LastSeen:
    """Wraps a context iterator and remembers the last context it produced (skipped ones included)."""

    def __init__(self, contexts: Iterator[Context]) -> None:
        self._contexts = contexts
        self.last: Context | None = None

    def __iter__(self) -> Iterator[Context]:
        for c in self._contexts:
            self.last = c
            yield c


def _check_finite(block_BD: torch.Tensor, cfg: HarvestConfig, first_row: int, per_ctx: int) -> None:
    finite = torch.isfinite(block_BD).all(dim=-1)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0]) + first_row
    raise HarvestError(
        f"NaN/Inf activations at layer {cfg.layer} in context {bad // per_ctx} (row {bad}); rows before it are "
        "kept. The model may overflow in its compute dtype: rerun with --dtype float32, or check the model"
    )
