"""The harvest loop: contexts -> truncated forward pass -> rows -> background store writer."""

from __future__ import annotations

import dataclasses
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
from store.format import ContextInfo, StoreMeta, ceil_div
from store.layout import harvest_chunk_rows
from store.location import StoreLocation
from store.provenance import provenance
from store.sink import ChunkSink
from store.stats import moments_of_pieces
from store.writer import StoreWriter

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as (rows produced so far, rows this run has to produce)."""


@dataclass(frozen=True)
class StoreResult:
    """What one layer's store got from a harvest."""

    layer: int
    store: str
    rows_written: int
    """Rows this run wrote to this store (fewer than it holds when it resumed; 0 when it was already written)."""
    resumed_at_row: int
    complete: bool


@dataclass(frozen=True)
class HarvestResult:
    store: str
    """``--store`` as given (with ``{layer}`` when several layers were harvested: ``stores`` names each)."""
    rows_written: int
    """Rows (token positions) this run's forward passes produced: each store got these or, when it had been
    further along, fewer (``stores``)."""
    resumed_at_row: int
    """The earliest resume point of the stores this run wrote to."""
    complete: bool
    """Whether every store is complete."""
    seconds: float
    """Wall-clock time of the whole call, model loading included."""
    loop_seconds: float = 0.0
    """Time from the first forward pass until every row was written: what tokens/s is measured over."""
    stores: tuple[StoreResult, ...] = ()
    """One per layer, shallowest first."""

    @property
    def tokens_per_second(self) -> float:
        return self.rows_written / self.loop_seconds if self.loop_seconds > 0 else 0.0


def default_batch_size(device: torch.device) -> int:
    return 64 if device.type == "cuda" else 8


def build_meta(cfg: HarvestConfig, model, tokenizer, source: DataSource, compute_dtype: torch.dtype,
               batch_size: int) -> StoreMeta:
    """The attributes of the store of ``cfg``, a single-layer harvest (``HarvestConfig.for_layer``)."""
    (layer,) = cfg.layers
    # A local model is named by its absolute path, so that `./m` and `/abs/m` are one model on resume, and known
    # by its content, so that another model put at the same path is not.
    name = local_name(cfg.model)
    info = model_info(model, name, model_weights_digest(cfg.model))
    context = ContextInfo(length=cfg.context_length, include_bos=cfg.include_bos)

    return StoreMeta(
        model=info,
        tokenizer=tokenizer_info(tokenizer, name),
        dataset=source.info(),
        context=context,
        layer=layer,
        hook_point=LayerCapture(model, layer).hook_point,
        d_model=info.d_model,
        dtype=cfg.store_dtype,
        compute_dtype=str(compute_dtype).removeprefix("torch."),
        n_rows=cfg.tokens,
        tokens_requested=cfg.tokens,
        chunk_rows=harvest_chunk_rows(cfg.chunk_rows, info.d_model, context, cfg.num_shards),
        num_shards=cfg.num_shards,
        # Per-process settings (shard index, credentials) stay out: every shard must write the same attributes.
        harvest_config={**{k: v for k, v in vars(cfg).items() if k not in {"storage_options", "shard"}},
                        "batch_size": batch_size},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance=provenance(model.device),
    )


def harvest(cfg: HarvestConfig, on_progress: ProgressCallback | None = None) -> HarvestResult:
    """Run (or resume) a harvest; returns when this shard of every layer's store is written and, where it was the
    last, the store finalized."""
    started = time.monotonic()
    locations = {layer: StoreLocation(cfg.store_of(layer), cfg.storage_options) for layer in cfg.layers}
    device = resolve_device(cfg.device)
    compute_dtype = resolve_compute_dtype(cfg.compute_dtype, device)
    source = DataSource.from_config(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.revision)
    special = special_tokens(tokenizer, cfg.model)
    # A shard makes its contexts from its own share of the documents, numbered from 0 (ShardPlan).
    contexts = iter(ContextStream(source.visible_texts(cfg.shard, cfg.num_shards), tokenizer, cfg.context_length,
                                  bos_id=special.bos, eos_id=special.eos, pad_id=special.pad))
    first = next(contexts, None)  # an empty data set fails here, before anything is created
    if first is None and cfg.num_shards == 1:
        raise HarvestError(f"data set '{cfg.dataset}' (split '{source.split}') holds no text: nothing to harvest")
    log.info("loading %s on %s (%s)", cfg.model, device, str(compute_dtype).removeprefix("torch."))
    model = load_model(cfg.model, cfg.revision, device, compute_dtype)
    for layer in cfg.layers:
        check_layer(model, layer, cfg.model)
    check_context_length(model, cfg.context_length, cfg.model)
    batch_size = cfg.batch_size or default_batch_size(device)
    writers = _open_writers(cfg, locations, lambda c: build_meta(c, model, tokenizer, source, compute_dtype,
                                                                  batch_size))
    try:
        results = {layer: _finish_written(cfg, layer, w) for layer, w in writers.items() if w.done}
        active = {layer: w for layer, w in writers.items() if not w.done}
        if not active:
            return HarvestResult(cfg.store, 0, 0, all(r.complete for r in results.values()),
                                 time.monotonic() - started, stores=tuple(results[layer] for layer in cfg.layers))
        resumed = {layer: w.resume_row for layer, w in active.items()}
        loop_started = time.monotonic()
        rows_written, per_layer = _run(cfg, active, model, _chain(first, contexts), device, on_progress,
                                       source.check_ended)
        loop_seconds = time.monotonic() - loop_started
        for layer, writer in active.items():
            complete = writer.finish()
            results[layer] = StoreResult(layer, cfg.store_of(layer), per_layer[layer], resumed[layer], complete)
    finally:
        for writer in writers.values():
            writer.close()
    stores = tuple(results[layer] for layer in cfg.layers)
    return HarvestResult(cfg.store, rows_written, min(resumed.values()), all(r.complete for r in stores),
                         time.monotonic() - started, loop_seconds, stores)


def _open_writers(cfg: HarvestConfig, locations: dict[int, StoreLocation],
                  meta_of: Callable[[HarvestConfig], StoreMeta]) -> dict[int, StoreWriter]:
    """Open (create, resume or join) every layer's store before any work, so that a mismatch or a lock held by
    another process stops the harvest at once; each store is the one its layer's single-layer harvest writes."""
    writers: dict[int, StoreWriter] = {}
    try:
        for layer in cfg.layers:
            writers[layer] = StoreWriter.open(locations[layer], meta_of(cfg.for_layer(layer)), shard=cfg.shard)
    except BaseException:
        for writer in writers.values():
            writer.close()
        raise
    return writers


def _finish_written(cfg: HarvestConfig, layer: int, writer: StoreWriter) -> StoreResult:
    """A store whose shard (or whole) is already written: finish the tidy-up and report it."""
    writer.close()
    # Also on a complete store: finalize then finishes the tidy-up a killed finalisation left undone.
    complete = finalize(writer.location, missing_ok=True)
    log.info("%s: this %s is already written; nothing to do", writer.location, "store" if complete else "shard")
    return StoreResult(layer, cfg.store_of(layer), 0, 0, complete)


def _chain(first: Context | None, rest: Iterator[Context]) -> Iterator[Context]:
    if first is not None:  # None: this shard got no documents, so its data ran out at its first row
        yield first
    yield from rest


@dataclass(frozen=True)
class ShardPlan:
    """The rows this run writes, and the grid of context batches that produces them.

    Rows and contexts are the shard's own (``StoreWriter.rows``): its contexts, made from its documents, are
    numbered from 0 and fill its chunks in order. With one shard they are the store's.
    """

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
        # Batches sit on a fixed grid of `batch` contexts, and are always whole (the last one too, as far as the
        # data goes), so that a resumed run, or one asked for more tokens, feeds the model exactly the batches an
        # uninterrupted run would, and so stores the same floats.
        return cls(
            start_row=writer.resume_row, end_row=writer.end_row, context=meta.context, batch=batch,
            first_context=(needed.start // batch) * batch, stop_context=ceil_div(needed.stop, batch) * batch,
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
    writers: dict[int, StoreWriter],
    model,
    contexts: Iterator[Context],
    device: torch.device,
    on_progress: ProgressCallback | None,
    check_ended: Callable[[], None] = lambda: None,
) -> tuple[int, dict[int, int]]:
    """Write this shard's rows of every layer's store from ``contexts``, in one pass; returns the rows the pass
    produced and the rows written to each store. ``check_ended`` is called when the data runs out before the
    stores' ends, before any store is ended there (a file cut short refuses it)."""
    plans = {layer: ShardPlan.of(writer) for layer, writer in writers.items()}
    for layer, writer in writers.items():
        _log_start(cfg, layer, writer, plans[layer])
    # Stores are committed chunk by chunk, each on its own: after a kill they may resume at different rows. The
    # pass starts at the earliest and gives each store only the rows it still needs.
    earliest = min(plans.values(), key=lambda plan: plan.start_row)
    span = dataclasses.replace(earliest, end_row=max(plan.end_row for plan in plans.values()),
                               stop_context=max(plan.stop_context for plan in plans.values()))
    sinks: dict[int, ChunkSink] = {}
    seen = _LastSeen(contexts)
    try:
        for layer, writer in writers.items():
            sinks[layer] = ChunkSink(writer)
        with Background((c for c in seen if c.index >= span.first_context), 16, "contexts") as source:
            produced, written, data_end = _write_batches(cfg, span, plans, model, source, seen, sinks, device,
                                                         on_progress)
        if data_end is not None and any(data_end < plan.end_row for plan in plans.values()):
            check_ended()
        for layer, sink in sinks.items():
            _end(cfg, plans[layer], writers[layer], sink, data_end)
    except BaseException:
        # Keep what is already complete: the chunks queued before the failure are written and committed.
        for sink in sinks.values():
            try:
                sink.close()
            except Exception as exc:  # the original error matters more
                log.debug("writer also failed while closing: %s", exc)
        raise
    return produced, written


def _log_start(cfg: HarvestConfig, layer: int, writer: StoreWriter, plan: ShardPlan) -> None:
    if plan.start_row:
        log.info("resuming %s at row %d (context %d)", writer.location, plan.start_row,
                 plan.context.context_of_row(plan.start_row))
    log.info(
        "harvesting %s layer %d -> %s: rows %d..%d in contexts of %d, %d contexts per batch",
        cfg.model, layer, writer.location, plan.start_row, plan.end_row, cfg.context_length, plan.batch,
    )


def _write_batches(cfg: HarvestConfig, span: ShardPlan, plans: dict[int, ShardPlan], model,
                   source: Iterator[Context], seen: _LastSeen, sinks: dict[int, ChunkSink], device: torch.device,
                   on_progress: ProgressCallback | None) -> tuple[int, dict[int, int], int | None]:
    """Run the batches of ``span`` (every store's plan at once). Returns the rows the pass produced, the rows
    written to each store and, when the data set ran out, the row after its last token (else None)."""
    produced = 0
    written = dict.fromkeys(plans, 0)
    captures: dict[tuple[int, ...], LayerCapture] = {}
    for first_context in span.batch_starts():
        want = span.contexts_in_batch(first_context)
        group = list(islice(source, want))
        if not group:
            return produced, written, span.end_of(seen.last)
        n_valid = (len(group) - 1) * span.context.rows_per_context + span.rows_of(group[-1])
        rows = {layer: plan.rows_to_write(first_context, n_valid) for layer, plan in plans.items()}
        rows = {layer: (lo, hi) for layer, (lo, hi) in rows.items() if hi > lo}
        if rows:
            # Only the layers that still need rows of this batch are captured, so the pass stops at the deepest
            # of them (a store further along costs nothing until the others catch up).
            needed = tuple(rows)
            capture = captures.get(needed) or captures.setdefault(needed, LayerCapture(model, needed))
            _write_batch(cfg, span, capture, sinks, group, first_context, rows, device)
            for layer, (lo, hi) in rows.items():
                written[layer] += hi - lo
            lo, hi = span.rows_to_write(first_context, n_valid)
            produced += hi - lo
            if on_progress is not None:
                on_progress(produced, span.todo)
        if len(group) < want or group[-1].n_real < cfg.context_length:
            return produced, written, first_context * span.context.rows_per_context + n_valid
    return produced, written, None


def _write_batch(cfg: HarvestConfig, plan: ShardPlan, capture: LayerCapture, sinks: dict[int, ChunkSink],
                 group: list[Context], first_context: int, rows: dict[int, tuple[int, int]],
                 device: torch.device) -> None:
    """One forward pass over a batch of contexts; queues rows [lo, hi) of its flattened rows to each layer's
    store, ``rows`` giving (lo, hi) per layer."""
    ids_CT = torch.from_numpy(np.stack([c.tokens for c in group])).to(device)
    try:
        acts = capture.outputs(ids_CT)
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
    tokens_B = ids_CT[:, first_pos:].reshape(-1).cpu().numpy().astype(np.int32)
    blocks = {}
    for layer, (lo, hi) in rows.items():
        acts_CTD = acts[layer]
        blocks[layer] = acts_CTD[:, first_pos:].reshape(-1, acts_CTD.shape[-1])[lo:hi]
        _check_finite(blocks[layer], layer, first_row + lo, plan.context.rows_per_context)
    for layer, (lo, hi) in rows.items():
        sink = sinks[layer]
        # The statistics are of the stored values, so of the rounded rows; computed here, where the rows are (the
        # GPU under CUDA), per piece of a chunk, and merged exactly by the sink.
        stored_BD = blocks[layer].to(dtypes.TORCH_DTYPES[cfg.store_dtype])
        moments = moments_of_pieces(stored_BD, sink.piece_cuts(first_row + lo, hi - lo))
        sink.put(first_row + lo, dtypes.encode(stored_BD, cfg.store_dtype), tokens_B[lo:hi], moments)


def _end(cfg: HarvestConfig, plan: ShardPlan, writer: StoreWriter, sink: ChunkSink, data_end: int | None) -> None:
    """Write what is queued; when the data set ran out, end the store at its last token."""
    if data_end is None or data_end >= plan.end_row:
        sink.close()
        return
    log.warning("%s: the data set ran out at row %d, before the %d tokens asked for", writer.location, data_end,
                cfg.tokens)
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


def _check_finite(block_BD: torch.Tensor, layer: int, first_row: int, per_ctx: int) -> None:
    finite = torch.isfinite(block_BD).all(dim=-1)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0]) + first_row
    raise HarvestError(
        f"NaN/Inf activations at layer {layer} in context {bad // per_ctx} (row {bad}); rows before it are "
        "kept. The model may overflow in its compute dtype: rerun with --dtype float32, or check the model"
    )
