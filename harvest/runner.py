"""The harvest loop: contexts -> truncated forward pass -> rows -> background store writer."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice

import numpy as np
import torch

from harvest.config import HarvestConfig
from harvest.data import Context, ContextStream, DataSource
from harvest.errors import HarvestError
from harvest.model import (
    LayerCapture,
    check_layer,
    load_model,
    load_tokenizer,
    model_info,
    resolve_compute_dtype,
    special_tokens,
    tokenizer_info,
)
from store import dtypes
from store.device import resolve_device
from store.format import ContextInfo, StoreMeta, default_chunk_rows
from store.location import StoreLocation
from store.writer import ChunkSink, StoreWriter, finalize

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


def in_background(items: Iterable, maxsize: int = 16) -> Iterator:
    """Iterate ``items`` on a helper thread, so reading and tokenising overlap the forward passes."""
    q: queue.Queue = queue.Queue(maxsize)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # re-raised by the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="contexts", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def build_meta(cfg: HarvestConfig, model, tokenizer, source: DataSource, compute_dtype: torch.dtype,
               batch_size: int) -> StoreMeta:
    info = model_info(model, cfg.model)
    from importlib.metadata import version

    return StoreMeta(
        model=info,
        tokenizer=tokenizer_info(tokenizer, cfg.model),
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
    meta = build_meta(cfg, model, tokenizer, source, compute_dtype, cfg.batch_size or default_batch_size(device))

    writer = StoreWriter.open(location, meta, shard=cfg.shard)
    if writer.done:
        writer.close()
        complete = writer.meta.complete or finalize(location, missing_ok=True)
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


def _run(
    cfg: HarvestConfig,
    writer: StoreWriter,
    model,
    contexts: Iterator[Context],
    device: torch.device,
    on_progress: ProgressCallback | None,
) -> int:
    rows = writer.rows
    start_row, end_row = writer.resume_row, writer.end_row
    first_pos = writer.meta.context.first_position
    per_ctx = writer.meta.context.rows_per_context
    batch = writer.meta.harvest_config["batch_size"]
    needed = rows.contexts_for_rows(start_row, end_row)
    # Batches sit on a fixed grid of `batch` contexts so that a resumed or sharded run feeds the model exactly
    # the batches an uninterrupted single run would, and so stores the same floats.
    first_ctx = (needed.start // batch) * batch
    last_ctx = min(-(-needed.stop // batch) * batch, writer.meta.n_contexts)
    if start_row:
        log.info("resuming %s at row %d (context %d)", writer.location, start_row, needed.start)
    log.info(
        "harvesting %s layer %d -> %s: rows %d..%d in contexts of %d, %d contexts per batch",
        cfg.model, cfg.layer, writer.location, start_row, end_row, cfg.context_length, batch,
    )
    capture = LayerCapture(model, cfg.layer)
    sink = ChunkSink(writer)
    todo = end_row - start_row
    produced = 0
    seen = _LastSeen(contexts)

    def rows_of(c: Context) -> int:
        return per_ctx if c.n_real == cfg.context_length else c.n_real - first_pos

    data_end: int | None = None  # set when the data set runs out: the row after its last token
    try:
        source = in_background(c for c in seen if c.index >= first_ctx)
        for batch_start in range(first_ctx, last_ctx, batch):
            want = min(batch, last_ctx - batch_start)
            group = list(islice(source, want))
            if not group:
                data_end = 0 if seen.last is None else seen.last.index * per_ctx + rows_of(seen.last)
                break
            ids_BT = torch.from_numpy(np.stack([c.tokens for c in group])).to(device)
            acts_BTD = capture(ids_BT)
            # Row r of the flattened batch is store row batch_start * per_ctx + r.
            acts_ND = acts_BTD[:, first_pos:].reshape(-1, acts_BTD.shape[-1])
            toks_N = ids_BT[:, first_pos:].reshape(-1)
            n_valid = (len(group) - 1) * per_ctx + rows_of(group[-1])
            lo = max(start_row - batch_start * per_ctx, 0)
            hi = min(end_row - batch_start * per_ctx, n_valid)
            if hi > lo:
                block = acts_ND[lo:hi]
                _check_finite(block, cfg, batch_start * per_ctx + lo, per_ctx)
                sink.put(batch_start * per_ctx + lo, dtypes.encode(block, cfg.store_dtype),
                         toks_N[lo:hi].cpu().numpy().astype(np.int32))
                produced += hi - lo
                if on_progress is not None:
                    on_progress(produced, todo)
            if len(group) < want or group[-1].n_real < cfg.context_length:
                data_end = batch_start * per_ctx + n_valid
                break
        if data_end is not None and data_end < end_row:
            log.warning("the data set ran out at row %d, before the %d tokens asked for", data_end, cfg.tokens)
            if data_end <= start_row:
                sink.close()
                writer.mark_exhausted(data_end)
            else:
                sink.flush_partial()
        else:
            sink.close()
    except BaseException:
        # Keep what is already complete: the chunks queued before the failure are written and committed.
        try:
            sink.close()
        except Exception as exc:  # the original error matters more
            log.debug("writer also failed while closing: %s", exc)
        raise
    return produced


class _LastSeen:
    """Wraps a context iterator and remembers the last context it produced (skipped ones included)."""

    def __init__(self, contexts: Iterator[Context]) -> None:
        self._contexts = contexts
        self.last: Context | None = None

    def __iter__(self) -> Iterator[Context]:
        for c in self._contexts:
            self.last = c
            yield c


def _check_finite(block_ND: torch.Tensor, cfg: HarvestConfig, first_row: int, per_ctx: int) -> None:
    finite = torch.isfinite(block_ND).all(dim=-1)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0, 0]) + first_row
    raise HarvestError(
        f"NaN/Inf activations at layer {cfg.layer} in context {bad // per_ctx} (row {bad}); rows before it are "
        "kept. The model may overflow in its compute dtype: rerun with --dtype float32, or check the model"
    )
