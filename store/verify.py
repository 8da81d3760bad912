"""`pipeline store verify`: check a store end to end and say what is wrong with it.

Reads every chunk (checksums catch corruption), counts NaN/Inf, recomputes every chunk's statistics, and checks
shapes, attributes, completeness and the per-row metadata against the layout rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from store import dtypes
from store import format as fmt
from store.errors import StoreError
from store.layout import RowMap, array_specs
from store.location import StoreLocation
from store.reader import ActivationStore, open_store
from store.stats import merge_all, moments_of

MAX_LISTED = 10
"""Problems of one kind listed one by one before the rest are only counted."""


@dataclass
class VerifyReport:
    store: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    """Checks that passed, in the order run."""
    chunks_read: int = 0
    bytes_read: int = 0
    nan_count: int = 0
    inf_count: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


def verify_store(
    url: str | StoreLocation,
    *,
    partial: bool = False,
    storage_options: dict | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    started = time.monotonic()
    report = VerifyReport(str(url))
    try:
        store = open_store(url, partial=partial, storage_options=storage_options)
    except StoreError as exc:
        report.errors.append(str(exc))
        return report
    if store.partial:
        report.warnings.append(f"store is incomplete: checked the first {store.n_rows:,} rows only")
    else:
        report.checks.append("harvest complete")
    _check_arrays(store, report)
    if report.errors:
        return report
    _check_chunks(store, report, on_progress)
    _check_row_metadata(store, report)
    _check_global_stats(store, report)
    if store.meta.complete and "consolidated_metadata" not in store.location.read_bytes("zarr.json").decode():
        report.warnings.append("metadata is not consolidated: run `pipeline store finalize` to add it")
    report.seconds = time.monotonic() - started
    return report


def _check_arrays(store: ActivationStore, report: VerifyReport) -> None:
    meta = store.meta
    for name, spec in array_specs(meta).items():
        try:
            arr = store.group[name]
        except KeyError:
            report.errors.append(f"array '{name}' is missing")
            continue
        shape = tuple(spec["shape"])
        if meta.complete and tuple(arr.shape) != shape:
            report.errors.append(f"array '{name}' has shape {tuple(arr.shape)}, expected {shape}")
        if np.dtype(arr.dtype) != np.dtype(spec["dtype"]):
            report.errors.append(f"array '{name}' has dtype {arr.dtype}, expected {spec['dtype']}")
        if tuple(arr.chunks) != tuple(spec["chunks"]):
            report.errors.append(f"array '{name}' has chunks {arr.chunks}, expected {spec['chunks']}")
    if not report.errors:
        report.checks.append(f"arrays, shapes, dtypes and chunking match format v{meta.format_version}")


def _check_chunks(
    store: ActivationStore, report: VerifyReport, on_progress: Callable[[int, int], None] | None
) -> None:
    bad_chunks, bad_stats = [], []
    means = store.group[fmt.CHUNK_MEAN]
    m2s = store.group[fmt.CHUNK_M2]
    for j in range(store.n_chunks):
        try:
            raw = store.read_chunk_raw(j)
        except (StoreError, ValueError, OSError) as exc:  # zarr raises ValueError on a checksum mismatch
            bad_chunks.append(f"chunk {j}: {exc}")
            continue
        report.chunks_read += 1
        report.bytes_read += raw.nbytes
        acts = dtypes.decode_numpy(raw, store.meta.dtype)
        nan = int(np.isnan(acts).sum())
        inf = int(np.isinf(acts).sum())
        report.nan_count += nan
        report.inf_count += inf
        if nan == inf == 0:
            moments = moments_of(acts)
            if not (
                np.allclose(moments.mean, means[j], rtol=1e-9, atol=1e-9)
                and np.allclose(moments.m2, m2s[j], rtol=1e-7, atol=1e-6)
            ):
                bad_stats.append(j)
        if on_progress is not None:
            on_progress(j + 1, store.n_chunks)
    for msg in bad_chunks[:MAX_LISTED]:
        report.errors.append(f"corrupt or missing activation {msg}")
    if len(bad_chunks) > MAX_LISTED:
        report.errors.append(f"... and {len(bad_chunks) - MAX_LISTED} more unreadable chunks")
    if report.nan_count or report.inf_count:
        report.errors.append(f"activations hold {report.nan_count:,} NaN and {report.inf_count:,} Inf values")
    if bad_stats:
        listed = ", ".join(map(str, bad_stats[:MAX_LISTED]))
        report.errors.append(f"stored statistics disagree with the data in chunk(s) {listed}")
    if not bad_chunks:
        report.checks.append(f"all {store.n_chunks} activation chunks read back and pass their checksums")
    if not (bad_stats or bad_chunks or report.nan_count or report.inf_count):
        report.checks.append("no NaN or Inf; per-chunk statistics match the data")


def _check_row_metadata(store: ActivationStore, report: VerifyReport) -> None:
    rows = RowMap.of(store.meta, store.n_rows)
    vocab = store.meta.tokenizer.vocab_size
    problems = []
    step = max(store.chunk_rows, 1 << 20)
    for start in range(0, store.n_rows, step):
        stop = min(start + step, store.n_rows)
        try:
            tokens = store.tokens(start, stop)
            ctx, pos = store.context_ids(start, stop), store.positions(start, stop)
        except (ValueError, OSError) as exc:
            problems.append(f"rows {start}..{stop}: token metadata unreadable ({exc})")
            continue
        want_ctx, want_pos = rows.ids_and_positions(start, stop)
        if tokens.min(initial=0) < 0 or tokens.max(initial=0) >= vocab:
            problems.append(f"rows {start}..{stop}: token ids outside the vocabulary 0..{vocab - 1}")
        if not (np.array_equal(ctx, want_ctx) and np.array_equal(pos, want_pos)):
            problems.append(f"rows {start}..{stop}: context ids / positions do not follow the layout")
    report.errors.extend(problems[:MAX_LISTED])
    if not problems:
        report.checks.append("token ids in vocabulary; context ids and positions follow the layout")


def _check_global_stats(store: ActivationStore, report: VerifyReport) -> None:
    if not store.meta.complete:
        return
    merged = merge_all(store.chunk_row_counts(), store.group[fmt.CHUNK_MEAN][:], store.group[fmt.CHUNK_M2][:])
    if np.allclose(merged.mean, store.group[fmt.MEAN][:], rtol=1e-9, atol=1e-9) and np.allclose(
        merged.var, store.group[fmt.VAR][:], rtol=1e-9, atol=1e-9
    ):
        report.checks.append("global mean and variance match the per-chunk statistics")
    else:
        report.errors.append("stats/mean or stats/var disagree with the per-chunk statistics: run finalize again")
