"""Store write and shuffled-read throughput against plain file I/O of the same bytes (warm page cache)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import BenchReport, Figure, timed
from store.batches import BatchOrder, ShuffledBatches
from store.format import ContextInfo, DatasetInfo, ModelInfo, StoreMeta, TokenizerInfo
from store.location import StoreLocation
from store.reader import open_store
from store.sink import ChunkSink
from store.writer import StoreWriter

log = logging.getLogger(__name__)


def bench_meta(n_rows: int, d: int, chunk_rows: int) -> StoreMeta:
    return StoreMeta(
        model=ModelInfo("bench", None, "None", 26, d, 256000, "0" * 16),
        tokenizer=TokenizerInfo("bench", 2, 1, 0, 256000),
        dataset=DatasetInfo("bench", None, "train", "text"),
        context=ContextInfo(128, False), layer=19, hook_point="model.layers.19", d_model=d, dtype="bfloat16",
        compute_dtype="bfloat16", n_rows=n_rows, tokens_requested=n_rows, chunk_rows=chunk_rows,
    )


def write_bench_store(path: str, raw: np.ndarray, chunk_rows: int, batch: int = 2048) -> None:
    meta = bench_meta(len(raw), raw.shape[1], chunk_rows)
    writer = StoreWriter.open(StoreLocation(path), meta)
    sink = ChunkSink(writer)
    tokens = np.zeros(batch, dtype=np.int32)
    for j in range(0, len(raw), batch):
        sink.put(j, raw[j : j + batch], tokens[: len(raw[j : j + batch])])
    sink.close()
    writer.finish()


def run(report: BenchReport, *, rows: int = 262144, d: int = 2304, batch: int = 2048, epochs: int = 3,
        workdir: str | None = None) -> None:
    chunk_rows = 4096
    raw = (torch.randn(rows, d) * 3).to(torch.bfloat16).view(torch.uint16).numpy()
    gb = raw.nbytes / 1e9
    log.info("store bench: %d rows x %d (%.2f GB bf16), chunks of %d rows", rows, d, gb, chunk_rows)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-store-") as tmp:
        root = Path(tmp)
        _write(report, root, raw, chunk_rows, gb)
        _read(report, root, d, batch, epochs, gb)


def _write(report: BenchReport, root: Path, raw: np.ndarray, chunk_rows: int, gb: float) -> None:
    plain_dir = root / "plain"
    plain_dir.mkdir()

    def plain_write() -> None:
        for j in range(0, len(raw), chunk_rows):
            with open(plain_dir / f"{j // chunk_rows}", "wb") as f:
                f.write(memoryview(raw[j : j + chunk_rows]).cast("B"))

    t_plain, _ = timed(plain_write)
    t_store, _ = timed(lambda: write_bench_store(str(root / "s.zarr"), raw, chunk_rows))
    report.add(Figure("store write", gb / t_store, gb / t_plain, "GB/s", "plain file writes of the same chunks",
                      note="ours adds per-chunk float64 mean/M2, crc32c and a progress commit per chunk"))


def _read(report: BenchReport, root: Path, d: int, batch: int, epochs: int, gb: float) -> None:
    st = open_store(str(root / "s.zarr"))
    chunk_rows = st.chunk_rows
    files = [Path(st.location.path(st.chunk_key(j))) for j in range(st.n_chunks)]
    for f in files:  # warm the page cache
        f.read_bytes()
    order = BatchOrder(st.n_rows, chunk_rows, (0, st.n_rows), batch_size=batch, seed=0)
    per_window = max(1, order.shuffle_rows // chunk_rows)
    chunk_order = np.random.default_rng(0).permutation(len(files))
    total_gb = epochs * gb
    # Several epochs through one loader: steady state, as in training (its buffers are allocated once a run).
    n_steps = epochs * order.batches_per_epoch
    loader_gb = n_steps * batch * d * 2 / 1e9

    def loader(verify: bool = True) -> float:
        """Seconds per byte in steady state: from the first batch on (a run allocates its buffers once)."""
        first = None
        for _ in ShuffledBatches(st, order, n_steps=n_steps, verify_checksums=verify):
            if first is None:
                first = time.perf_counter()
        return (time.perf_counter() - first) / ((n_steps - 1) * batch * d * 2 / 1e9)

    window = np.zeros((per_window, st.chunk_nbytes), dtype=np.uint8)

    def plain_read() -> None:
        # The same files, in random order, into a reused buffer the size of the loader's shuffle window:
        # the least any loader must do to hold a window of rows in memory.
        for _ in range(epochs):
            for i, j in enumerate(chunk_order):
                with open(files[j], "rb", buffering=0) as f:
                    f.readinto(window[i % per_window])

    one = np.zeros(st.chunk_nbytes, dtype=np.uint8)

    def plain_read_cached() -> None:
        # One chunk-sized buffer that stays in the CPU cache: an upper bound (a copy out of the page cache).
        for _ in range(epochs):
            for j in chunk_order:
                with open(files[j], "rb", buffering=0) as f:
                    f.readinto(one)

    win = torch.zeros((per_window * chunk_rows, d), dtype=torch.uint16)
    out = torch.zeros((batch, d), dtype=torch.uint16)

    def read_then_gather() -> None:
        # The ceiling of any loader that shuffles in RAM: read a window, then gather its batches, one after the
        # other, without checksums or threads.
        win_np = win.numpy()
        for _ in range(epochs):
            for w in range(0, len(chunk_order), per_window):
                for i, j in enumerate(chunk_order[w : w + per_window]):
                    with open(files[j], "rb", buffering=0) as f:
                        f.readinto(win_np[i * chunk_rows : (i + 1) * chunk_rows])
                perm = torch.randperm(per_window * chunk_rows)
                for b in range(0, len(perm) - batch + 1, batch):
                    torch.index_select(win, 0, perm[b : b + batch], out=out)

    def zarr_read() -> None:
        arr = st.group["activations"]
        for j in chunk_order:
            np.asarray(arr[j * chunk_rows : (j + 1) * chunk_rows])

    loader()  # warm-up
    t_plain = min(timed(plain_read)[0] for _ in range(3))
    t_cached = min(timed(plain_read_cached)[0] for _ in range(3))
    t_ceiling = min(timed(read_then_gather)[0] for _ in range(3))
    t_loader = min(loader() for _ in range(3)) * loader_gb
    t_loader_fast = min(loader(False) for _ in range(3)) * loader_gb
    t_zarr = min(timed(zarr_read)[0] for _ in range(2))
    window_note = f"batch {batch}, shuffle window {order.shuffle_rows:,} rows, {os.cpu_count()} cores"
    report.add(Figure("shuffled read", loader_gb / t_loader, total_gb / t_plain, "GB/s",
                      "plain reads of the same chunk files into a window-sized buffer", target=0.8,
                      note=window_note + "; checksums verified"))
    report.add(Figure("shuffled read, checksums off", loader_gb / t_loader_fast, total_gb / t_plain, "GB/s",
                      "plain reads of the same chunk files into a window-sized buffer",
                      note="crc32c is one more pass over each chunk in memory"))
    report.add(Figure("shuffled read vs the read-then-shuffle ceiling", loader_gb / t_loader,
                      total_gb / t_ceiling, "GB/s", "read a window, then gather its batches (serial, no checksums)",
                      note="what bounds the first ratio: a shuffled row crosses memory twice, a plain read once"))
    report.add(Figure("shuffled read vs a cache-resident copy", loader_gb / t_loader, total_gb / t_cached, "GB/s",
                      "plain reads into one chunk-sized buffer that stays in CPU cache", note="an upper bound"))
    report.add(Figure("zarr-python read of whole chunks", gb / t_zarr, total_gb / t_plain, "GB/s",
                      "plain reads of the same chunk files", note="for reference: why the store has a fast path"))
