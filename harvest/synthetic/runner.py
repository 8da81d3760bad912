"""`pipeline synth`: rows of a synthetic model's stream, with their ground truth, into a store of the same format as
a harvest's, so that fit, evaluate, browse and report read it unchanged.

The store is written chunk by chunk through :class:`store.writer.StoreWriter`, like a harvest's: a run killed at
any moment reruns to the same store, because every chunk's rows are the stream's rows there, whatever ran before
(the stream is seeded per block, harvest/synthetic/sampler.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch

from harvest.errors import HarvestError
from harvest.synthetic.config import SynthConfig
from harvest.synthetic.model import ModelSpec, load_or_build, spec_of
from harvest.synthetic.sampler import BLOCK_ROWS, Block, Stream, make_sampler
from store import dtypes
from store.device import resolve_device
from store.format import (
    ContextInfo,
    DatasetInfo,
    ModelInfo,
    StoreMeta,
    SyntheticInfo,
    TokenizerInfo,
    default_chunk_rows,
)
from store.killpoint import kill_point
from store.location import StoreLocation
from store.provenance import provenance
from store.stats import moments_of_pieces
from store.truth import GroundTruth
from store.writer import StoreWriter

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as (rows written so far, rows this run writes)."""

PILOT_BLOCKS = 16
"""Blocks of the stream whose widest row sets the default number of slots."""


@dataclass(frozen=True)
class SynthResult:
    store: str
    rows_written: int
    """Rows this run wrote (fewer than the store holds when it resumed; 0 when it was already complete)."""
    resumed_at_row: int
    complete: bool
    seconds: float
    true_l0: float
    """Mean active true features per row of the rows written (NaN when none were)."""

    @property
    def rows_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


def pilot_slots(stream: Stream, first_row: int) -> int:
    """Twice the widest row of the stream's first PILOT_BLOCKS blocks from ``first_row``, rounded up to 8."""
    widest = 0
    for j in range(first_row // BLOCK_ROWS, first_row // BLOCK_ROWS + PILOT_BLOCKS):
        widest = max(widest, int(stream.block(j).counts_B.max()))
    return max(8, -(-2 * widest // 8) * 8)


def synthetic_meta(spec: ModelSpec, truth: GroundTruth, *, seed: int, first_row: int, n_rows: int, slots: int,
                   sampler: str, device: torch.device, store_dtype: str, chunk_rows: int | None,
                   settings: dict) -> StoreMeta:
    """The attributes of a synthetic store: the model and stream in ``synthetic``, and the LM-shaped parts filled
    so that every reader of a harvest's store reads it (one row per one-token context, token id 0)."""
    digest = truth.digest()
    name = f"synthetic/{spec.name}"
    return StoreMeta(
        model=ModelInfo(name=name, revision=None, architecture="SyntheticModel", n_layers=1, d_model=truth.d_model,
                        vocab_size=1, fingerprint=digest, weights_digest=digest),
        tokenizer=TokenizerInfo(name="none", bos_token_id=0, eos_token_id=0, pad_token_id=None, vocab_size=1),
        dataset=DatasetInfo(name=name, config=spec.source, split=f"stream seed {seed}", text_field=""),
        context=ContextInfo(length=2, include_bos=False),
        layer=0, hook_point="synthetic", d_model=truth.d_model, dtype=store_dtype, compute_dtype="float32",
        n_rows=n_rows, tokens_requested=n_rows, chunk_rows=chunk_rows or default_chunk_rows(truth.d_model),
        harvest_config=settings, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance=provenance(device),
        synthetic=SyntheticInfo(
            name=spec.name, config=spec.config, config_file=spec.source, model_digest=digest, seed=seed,
            first_row=first_row, block_rows=BLOCK_ROWS, sampler=sampler, device=device.type,
            n_features=truth.n_features, rank=truth.rank, n_children=int((truth.parent_G >= 0).sum()), slots=slots),
    )


def synthesize(cfg: SynthConfig, on_progress: Progress | None = None,
               on_build: Callable[[int, int], None] | None = None) -> SynthResult:
    """Write (or resume, or finish) the store of ``cfg``."""
    started = time.monotonic()
    spec = spec_of(cfg.preset, cfg.config)
    device = resolve_device(cfg.device)
    truth = load_or_build(spec, cfg.model_cache, device, on_build)
    stream = Stream(make_sampler(cfg.sampler, truth, device), cfg.seed, device)
    slots = cfg.slots or pilot_slots(stream, 0)
    settings = {k: v for k, v in vars(cfg).items() if k != "storage_options"}
    meta = synthetic_meta(spec, truth, seed=cfg.seed, first_row=0, n_rows=cfg.samples, slots=slots,
                          sampler=cfg.sampler, device=device, store_dtype=cfg.store_dtype, chunk_rows=cfg.chunk_rows,
                          settings=settings)
    return write_stream(StoreLocation(cfg.store, cfg.storage_options), meta, truth, stream, started, on_progress)


def write_stream(location: StoreLocation, meta: StoreMeta, truth: GroundTruth, stream: Stream, started: float,
                 on_progress: Progress | None = None) -> SynthResult:
    """Write the stream's rows ``[first_row, first_row + n_rows)`` into the store at ``location``."""
    writer = StoreWriter.open(location, meta)
    try:
        if writer.done:
            log.info("%s is already complete; nothing to do", location)
            complete = writer.finish()
            return SynthResult(str(location), 0, 0, complete, time.monotonic() - started, float("nan"))
        writer.write_truth(truth.arrays())
        resumed, first = writer.resume_row, meta.synthetic.first_row
        if resumed:
            log.info("resuming %s at row %d", location, resumed)
        active = 0
        for k in range(writer.next_chunk, writer.end_chunk):
            lo, hi = writer.rows.chunk_bounds(k)
            block = stream.rows(first + lo, first + hi)
            ids, coefs = _padded(block, meta.synthetic.slots, location, lo)
            active += len(block.row_P)
            stored = block.x_BD.to(dtypes.TORCH_DTYPES[meta.dtype])
            (moments,) = moments_of_pieces(stored, [0, hi - lo])
            writer.write_chunk(k, dtypes.encode(stored, meta.dtype), np.zeros(hi - lo, dtype=np.int32),
                               moments=moments, truth_rows=(ids, coefs))
            kill_point("synth", f"chunk-{k}")
            if on_progress is not None:
                on_progress(hi - resumed, writer.end_row - resumed)
        complete = writer.finish()
    finally:
        writer.close()
    written = writer.end_row - resumed
    return SynthResult(str(location), written, resumed, complete, time.monotonic() - started,
                       active / written if written else float("nan"))


def _padded(block: Block, slots: int, location: StoreLocation, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows' lists padded to the store's slots; a row wider than them is one line naming it."""
    try:
        ids, coefs = block.padded(slots)
    except ValueError:
        counts = block.counts_B
        row = first_row + int(torch.argmax(counts))
        raise HarvestError(
            f"row {row} of {location} has {int(counts.max())} active features, more than the store's {slots} "
            f"slots: synthesize it into another --store with --slots {2 * int(counts.max())}"
        ) from None
    return ids.cpu().numpy().astype(np.int32), coefs.cpu().numpy()
