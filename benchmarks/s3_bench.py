"""Fit tokens/s reading the store from a loopback S3 server (moto) against reading it from local disk."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import BenchReport, Figure
from benchmarks.s3_server import moto_server
from benchmarks.store_bench import write_bench_store
from fit.config import SAEConfig, TrainConfig
from fit.trainer import fit
from store.batches import BatchOrder, ShuffledBatches
from store.reader import open_store

log = logging.getLogger(__name__)


def _fit_rate(store: str, out: str, steps: int) -> float:
    cfg = TrainConfig(store=store, out=out, tokens=steps * 2048, data="stream", log_every=steps, holdout=0.0,
                      checkpoint_every=0)
    [result] = fit(cfg, [SAEConfig(variant="hier")])
    last = (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()[-1]
    return json.loads(last)["tokens_per_second"]


def _read_rate(store: str) -> float:
    st = open_store(store)
    order = BatchOrder(st.n_rows, st.chunk_rows, (0, st.n_rows), batch_size=2048, seed=0)
    t = time.perf_counter()
    n = 0
    for _, batch in ShuffledBatches(st, order):
        n += batch.numel() * 2
    return n / (time.perf_counter() - t) / 1e9


def run(report: BenchReport, *, d: int = 640, rows: int = 131072, steps: int = 40,
        workdir: str | None = None) -> None:
    raw = (torch.randn(rows, d) * 3).to(torch.bfloat16).view(torch.uint16).numpy()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-s3-") as tmp, moto_server() as server:
        local = f"{tmp}/s.zarr"
        remote = f"s3://{server.new_bucket()}/s.zarr"
        write_bench_store(local, raw, chunk_rows=16384)
        t = time.perf_counter()
        write_bench_store(remote, raw, chunk_rows=16384)
        log.info("wrote %.2f GB to the loopback S3 server in %.1fs", raw.nbytes / 1e9, time.perf_counter() - t)
        _fit_rate(local, f"{tmp}/warm", 5)
        disk = _fit_rate(local, f"{tmp}/disk", steps)
        s3 = _fit_rate(remote, f"{tmp}/s3", steps)
        report.add(Figure(f"fit from S3 (moto on loopback), d={d}", s3, disk, "tok/s",
                          "the same fit reading the store from local disk",
                          note="one hier SAE, batch 2048, streaming, 8 concurrent chunk GETs"))
        report.add(Figure("shuffled read from S3 (moto on loopback)", _read_rate(remote), _read_rate(local), "GB/s",
                          "the same read from local disk (page cache)",
                          note="moto is a Python server: a lower bound for a real object store"))
